import random

import pytest

from tasks.domains import DOMAINS, eval_suite, make_seeds
from tasks.seeds import evolve, next_shift, shifted_levels


@pytest.mark.parametrize(
    "shift,rate,expected",
    [(0, 0.8, 1), (0, 0.3, 0), (0, 0.01, -1), (-2, 0.0, -2), (4, 0.9, 4), (1, 0.6, 2)],
)
def test_next_shift_stays_in_band_and_inside_levels(shift, rate, expected):
    # levels 1..3 of 5: at most four levels up (all at 5), two down (all at 1)
    assert next_shift(shift, rate, 0.02, 0.5, [1, 2, 3], 5) == expected


def test_shifted_levels_clip():
    assert shifted_levels([1, 2, 3], -1, 5) == [1, 1, 2]
    assert shifted_levels([1, 2, 3], 3, 5) == [4, 5, 5]


def test_evolve_keeps_failed_original_and_fresh_outside_suite():
    d = DOMAINS["arith"]
    suite = {s.question for s in eval_suite(d, 128)}
    rng = random.Random(0)
    first = make_seeds(d, 100, 2, rng, suite)
    rates = {s.id: (0.0 if i < 30 else 0.25 if i < 50 else 1.0) for i, s in enumerate(first)}
    nxt = evolve(
        first,
        rates,
        first,
        d,
        count=100,
        levels=[2],
        shift=0,
        keep_failed=0.4,
        keep_original=0.2,
        easier_below=0.02,
        harder_above=0.5,
        rng=rng,
        exclude=suite,
    )
    assert len(nxt.seeds) == 100
    assert len({s.question for s in nxt.seeds}) == 100
    assert nxt.counts == {"failed": 40, "original": 20, "fresh": 40}
    failed = [s for s in nxt.seeds if s.origin == "failed"]
    # half-solved ones come first
    assert {s.id for s in failed[:20]} == {s.id for s in first[30:50]}
    assert not suite & {s.question for s in nxt.seeds}
    # the mean pass rate 0.55 is above 0.5: fresh seeds move a level up
    assert nxt.shift == 1
    assert {s.difficulty for s in nxt.seeds if s.origin == "fresh"} == {3}
