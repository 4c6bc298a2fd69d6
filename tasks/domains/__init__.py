"""Task domains. A domain makes seeds, verifies answers, and writes reference solutions.

`DOMAINS` is the one registry. Seed making and the held-out suite are shared here so every
domain gets the same guarantee: the frozen suite is drawn first from its own random stream, and
no seed and no pretraining text is ever one of its questions.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from tasks.domains import arith
from tasks.domains import math as math_domain
from tasks.records import Seed, Verdict


@dataclass(frozen=True)
class Domain:
    name: str
    generate: Callable[[random.Random, int], Seed]
    verify: Callable[[str, str], Verdict]
    solution: Callable[[str], str]
    max_difficulty: int
    # Model-written text -> a seed whose answer the domain computed, or None (evolve's filter).
    read_problem: Callable[[str, str], Seed | None]
    # A harder variant of a seed (evolve's domain-aware mutation).
    mutate: Callable[[Seed, random.Random], Seed]


DOMAINS: dict[str, Domain] = {
    "arith": Domain(
        "arith",
        arith.generate,
        arith.verify,
        arith.solution,
        arith.MAX_DIFFICULTY,
        arith.read_problem,
        arith.mutate,
    ),
    "math": Domain(
        "math",
        math_domain.generate,
        math_domain.verify,
        math_domain.solution,
        math_domain.MAX_DIFFICULTY,
        math_domain.read_problem,
        math_domain.mutate,
    ),
}

EVAL_STREAM = "held-out-eval-suite"


def eval_suite(domain: Domain, size: int, max_difficulty: int = 4) -> list[Seed]:
    """The frozen held-out suite: the same items for every generation and every run.

    Levels 1..max_difficulty in equal shares. It depends on nothing but its size.
    """
    rng = random.Random(f"{domain.name}/{EVAL_STREAM}/{size}")
    items: dict[str, Seed] = {}
    levels = list(range(1, max_difficulty + 1))
    attempts = 0
    while len(items) < size:
        level = levels[len(items) % len(levels)]
        s = domain.generate(rng, level)
        items.setdefault(s.question, Seed(s.id, s.question, s.answer, level, "eval"))
        attempts += 1
        if attempts > size * 100:
            raise RuntimeError(f"cannot draw {size} distinct eval items")
    return list(items.values())


def make_seeds(
    domain: Domain,
    count: int,
    difficulty: int | Iterable[int],
    rng: random.Random,
    exclude: set[str],
    origin: str = "generated",
) -> list[Seed]:
    """`count` distinct fresh seeds, none of whose questions is in `exclude`."""
    levels = [difficulty] if isinstance(difficulty, int) else list(difficulty)
    out: dict[str, Seed] = {}
    attempts = 0
    while len(out) < count:
        # Cycle levels per attempt: a small level that runs out of questions does not stall.
        level = levels[attempts % len(levels)]
        s = domain.generate(rng, level)
        attempts += 1
        if s.question not in exclude and s.question not in out:
            out[s.question] = Seed(s.id, s.question, s.answer, s.difficulty, origin)
        if attempts > count * 100:
            raise RuntimeError(
                f"cannot draw {count} distinct seeds at difficulty {levels} outside the suite"
            )
    return list(out.values())
