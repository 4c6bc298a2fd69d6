"""Seed sets: reading a user's seed file, and evolving the next generation's seeds.

The next seed set is built from what the model just did: the seeds it failed or half-solved
(most informative for rejection sampling), a share of the first seed set (an anchor against
drift), and fresh seeds from the domain generator drawn from a mix of difficulty levels that
follows the pass rate (a curriculum: the mix moves up a level when seeds pass so often they
teach little, down when they pass so rarely they yield no samples). Every seed is checked
against the frozen eval suite. Pure apart from `read_seed_file`.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from tasks.domains import Domain, make_seeds
from tasks.records import Seed, stable_hash


class SeedFileError(ValueError):
    """A seed file that cannot be used; the message names the file and line."""


def read_seed_file(path: Path) -> list[Seed]:
    """Seeds from JSONL: one object per line with `question`, `answer`, optional `id`,
    `difficulty`. Blank lines are skipped. Any bad line stops with its line number."""
    path = Path(path)
    if not path.is_file():
        raise SeedFileError(f"{path}: no such seed file")
    seeds, ids = [], set()
    with open(path) as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise SeedFileError(f"{where}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise SeedFileError(f"{where}: expected a JSON object, got {type(obj).__name__}")
            q = obj.get("question")
            if not isinstance(q, str) or not q.strip():
                raise SeedFileError(f"{where}: missing field 'question' (a non-empty string)")
            if "answer" not in obj:
                raise SeedFileError(f"{where}: missing field 'answer' (use null if none)")
            answer = obj["answer"]
            if answer is not None and not isinstance(answer, str | int):
                raise SeedFileError(f"{where}: field 'answer' must be a string, integer or null")
            difficulty = obj.get("difficulty", 1)
            if not isinstance(difficulty, int) or difficulty < 1:
                raise SeedFileError(f"{where}: field 'difficulty' must be a positive integer")
            sid = str(obj.get("id") or stable_hash("seed", q))
            if sid in ids:
                raise SeedFileError(f"{where}: duplicate seed id {sid!r}")
            ids.add(sid)
            seeds.append(
                Seed(sid, q.strip(), None if answer is None else str(answer), difficulty, "file")
            )
    if not seeds:
        raise SeedFileError(f"{path}: the seed file has no seeds")
    return seeds


def check_disjoint(seeds: list[Seed], suite_questions: set[str], source: str) -> None:
    leaked = [s.question for s in seeds if s.question in suite_questions]
    if leaked:
        raise SeedFileError(
            f"{source}: {len(leaked)} seed(s) are items of the held-out eval suite "
            f"(e.g. {leaked[:3]}); remove them so evaluation stays honest"
        )


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
