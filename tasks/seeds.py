"""Seed sets: evolving the next generation's seeds.

The next seed set is built from what the model just did: the seeds it failed or half-solved
(most informative for rejection sampling), a share of the first seed set (an anchor against
drift), and fresh seeds from the domain generator drawn from a mix of difficulty levels that
follows the pass rate (a curriculum: the mix moves up a level when seeds pass so often they
teach little, down when they pass so rarely they yield no samples). Every seed is checked
against the frozen eval suite. Pure; user seed files are read by `tasks.seedfile`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from tasks.domains import Domain, make_seeds
from tasks.records import Seed
from tasks.seedfile import SeedFileError

__all__ = ["SeedFileError", "NextSeeds", "evolve", "next_shift", "shifted_levels"]


@dataclass(frozen=True)
class NextSeeds:
    seeds: list[Seed]
    shift: int
    counts: dict[str, int]


def shifted_levels(levels: list[int], shift: int, max_difficulty: int) -> list[int]:
    """The level mix moved `shift` levels up (or down), kept inside 1..max_difficulty."""
    return [min(max(level + shift, 1), max_difficulty) for level in levels]


def next_shift(
    shift: int,
    pass_rate: float,
    easier_below: float,
    harder_above: float,
    levels: list[int],
    max_difficulty: int,
) -> int:
    """Curriculum: move the mix up a level when seeds pass too often to teach anything, down
    when they pass too rarely to yield samples; stop once the whole mix is at an edge."""
    if pass_rate > harder_above:
        return min(shift + 1, max_difficulty - min(levels))
    if pass_rate < easier_below:
        return max(shift - 1, 1 - max(levels))
    return shift


def evolve(
    previous: list[Seed],
    pass_rates: dict[str, float],
    original: list[Seed],
    domain: Domain,
    *,
    count: int,
    levels: list[int],
    shift: int,
    keep_failed: float,
    keep_original: float,
    easier_below: float,
    harder_above: float,
    rng: random.Random,
    exclude: set[str],
) -> NextSeeds:
    rates = [pass_rates.get(s.id, 0.0) for s in previous]
    overall = sum(rates) / len(rates) if rates else 0.0
    new_shift = next_shift(
        shift, overall, easier_below, harder_above, levels, domain.max_difficulty
    )

    # Half-solved first (the model can already produce accepted samples there), then failed.
    weak = [s for s in previous if pass_rates.get(s.id, 0.0) <= 0.5]
    weak.sort(key=lambda s: (pass_rates.get(s.id, 0.0) == 0.0, -pass_rates.get(s.id, 0.0)))
    failed = [
        Seed(s.id, s.question, s.answer, s.difficulty, "failed")
        for s in weak[: int(keep_failed * count)]
    ]
    chosen = {s.question for s in failed}
    pool = [s for s in original if s.question not in chosen]
    n_orig = min(int(keep_original * count), len(pool))
    kept_original = [
        Seed(s.id, s.question, s.answer, s.difficulty, "original") for s in rng.sample(pool, n_orig)
    ]
    chosen |= {s.question for s in kept_original}
    mix = shifted_levels(levels, new_shift, domain.max_difficulty)
    fresh = make_seeds(
        domain, count - len(failed) - len(kept_original), mix, rng, exclude | chosen, origin="fresh"
    )
    seeds = failed + kept_original + fresh
    counts = {"failed": len(failed), "original": len(kept_original), "fresh": len(fresh)}
    return NextSeeds(seeds, new_shift, counts)
