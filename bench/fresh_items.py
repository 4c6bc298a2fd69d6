"""Fresh items for P7: problems no arm ever saw, drawn from the domain's own generator. Pure.

The frozen suite is fixed, so a flywheel that tunes its seeds, its gate and its levers against
it may end up fitting the suite's items rather than the domain. P7 therefore also scores every
arm's final model on items drawn afresh from the domain's grammar: none is a suite item, and none
is a question of any seed set or training set of any arm or lever (`draw_fresh`'s `exclude`).
They are drawn from levels 2-3 by default: at level 1 (800 possible `arith` questions) three
generations of seeds leave almost nothing unseen.

Each level is drawn from a random stream of its own, seeded with `FRESH_SEED`, so the items of
one level do not shift when another level's exclusions change, and a rerun draws the same items.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from tasks.domains import Domain
from tasks.records import Seed

# The generator seed of the fresh items. No flywheel stage seeds a generator stream with it:
# the seeds stage uses `stable_hash(seeds.seed, generation)` (hex digests), the suite
# `"<domain>/held-out-eval-suite/<size>"` and `"<domain>/extra-suite/..."`, the bootstrap
# `"bootstrap/<seed>"`, the judge `"judge-policy/..."` / `"judge-bootstrap/..."`, P7's reference
# arm `"reference-sft"`. `random.Random(str)` hashes the whole string (SHA-512), so another
# string gives an unrelated stream. What makes an item unseen is the exclusion, not the seed;
# the seed only keeps the draw independent of every stage's own draws.
FRESH_SEED = "p7/fresh-items"
DEFAULT_LEVELS = (2, 3)
FRESH_ORIGIN = "fresh"  # not `suite:<name>`: the eval stage scores these items as its main suite
# Draws in a row that found no new unseen question before a level counts as used up: far more
# than a level with any unseen questions left needs between two finds (level 1 of `arith`, 41
# unseen of 800, ~20 draws), and cheap (generating an item takes microseconds).
PATIENCE = 20_000


class FreshItemsError(ValueError):
    """The generator cannot supply as many unseen items as asked at some level."""


def level_quotas(n: int, levels: Iterable[int]) -> dict[int, int]:
    """`n` items split over `levels` in equal shares (ascending; the easier levels take the
    remainder), as the frozen suite splits its levels."""
    lv = sorted(set(levels))
    if not lv:
        raise ValueError("fresh items: no levels given")
    share, extra = divmod(n, len(lv))
    return {x: share + (i < extra) for i, x in enumerate(lv)}


def draw_fresh(
    domain: Domain,
    n: int,
    levels: Iterable[int],
    exclude: set[str],
    *,
    seed: str = FRESH_SEED,
    patience: int = PATIENCE,
) -> list[Seed]:
    """`n` distinct items of `levels` (equal shares) from `domain`'s generator, none of whose
    questions is in `exclude`; the same items for the same arguments. Raises `FreshItemsError`
    when a level runs out of unseen questions (`patience` draws in a row found none new)."""
    if n < 1:
        raise ValueError(f"fresh items: n must be >= 1, got {n}")
    quotas = level_quotas(n, levels)
    if bad := [x for x in quotas if not 1 <= x <= domain.max_difficulty]:
        raise ValueError(f"fresh items: levels {bad} outside 1..{domain.max_difficulty}")
    out: list[Seed] = []
    for level, quota in quotas.items():
        rng = random.Random(f"{domain.name}/{seed}/level-{level}")
        got: dict[str, Seed] = {}
        misses = 0
        while len(got) < quota:
            s = domain.generate(rng, level)
            if s.question in exclude or s.question in got:
                misses += 1
                if misses >= patience:
                    raise FreshItemsError(
                        f"fresh items: only {len(got)} of the {quota} level-{level} items asked "
                        f"for are unseen ({patience} draws in a row found no new one; "
                        f"{len(exclude)} questions excluded as seen by the suite, seeds and "
                        "training sets): the level is used up; ask for fewer items or harder "
                        "levels"
                    )
                continue
            misses = 0
            got[s.question] = Seed(s.id, s.question, s.answer, level, FRESH_ORIGIN)
        out += got.values()
    return out


def questions_from_prompts(prompts: Iterable[str], template: str) -> set[str]:
    """The questions inside prompts rendered by `template` (`{question}` once): what a training
    set whose rows hold only prompts (reference-solution SFT) trained on. Prompts of another
    shape are skipped."""
    mark = "\x00question\x00"
    head, found, tail = template.format(question=mark).partition(mark)
    if not found:
        raise ValueError(f"prompt template {template!r} has no {{question}}")
    return {
        p[len(head) : len(p) - len(tail)]
        for p in prompts
        if len(p) >= len(head) + len(tail) and p.startswith(head) and p.endswith(tail)
    }


def fresh_name(domain: str, n: int, levels: Iterable[int]) -> str:
    """The folder of one fresh draw: another size or level mix is another set of items."""
    return f"{domain}-levels-{'-'.join(map(str, sorted(set(levels))))}-n{n}"
