import json
import random

import pytest

from tasks.domains import DOMAINS, eval_suite, make_seeds
from tasks.seeds import (
    SeedFileError,
    check_disjoint,
    evolve,
    next_shift,
    read_seed_file,
    shifted_levels,
)


def write(tmp_path, text):
    p = tmp_path / "seeds.jsonl"
    p.write_text(text)
    return p


def test_reads_good_file(tmp_path):
    p = write(
        tmp_path,
        '{"question": "1+2", "answer": 3}\n\n{"id": "x", "question": "4-1", '
        '"answer": "3", "difficulty": 2}\n',
    )
    seeds = read_seed_file(p)
    assert [(s.question, s.answer, s.difficulty) for s in seeds] == [
        ("1+2", "3", 1),
        ("4-1", "3", 2),
    ]
    assert seeds[1].id == "x"


@pytest.mark.parametrize(
    "text,message",
    [
        ("", "has no seeds"),
        ("\n\n", "has no seeds"),
        ('{"question": "1+2", "answer": 3}\n{bad json\n', ":2: not valid JSON"),
        ('{"answer": 3}\n', ":1: missing field 'question'"),
        ('{"question": "1+2"}\n', ":1: missing field 'answer'"),
        ("[1, 2]\n", ":1: expected a JSON object"),
        ('{"question": "1+2", "answer": [3]}\n', ":1: field 'answer'"),
        ('{"question": "1", "answer": 1, "difficulty": 0}\n', ":1: field 'difficulty'"),
        (
            '{"id": "a", "question": "1", "answer": 1}\n'
            '{"id": "a", "question": "2", "answer": 2}\n',
            ":2: duplicate seed id",
        ),
    ],
)
def test_bad_seed_files_name_file_and_line(tmp_path, text, message):
    p = write(tmp_path, text)
    with pytest.raises(SeedFileError) as e:
        read_seed_file(p)
    assert str(p) in str(e.value) and message in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(SeedFileError, match="no such seed file"):
        read_seed_file(tmp_path / "nope.jsonl")


def test_seed_file_overlapping_suite_is_refused(tmp_path):
    suite = eval_suite(DOMAINS["arith"], 64)
    p = write(tmp_path, json.dumps({"question": suite[0].question, "answer": suite[0].answer}))
    with pytest.raises(SeedFileError, match="held-out eval suite"):
        check_disjoint(read_seed_file(p), {s.question for s in suite}, str(p))


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
