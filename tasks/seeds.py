"""Seed sets: evolving the next generation's seeds from what the model just did. Pure.

Generation 1 starts from the user's seed file or the domain generator. From then on the seed
set is a weighted mix of sources (`SOURCES`):

- `failures`: last generation's seeds with a pass rate at or below `failure_below`,
- `mutations`: domain-aware harder variants of those failures (`Domain.mutate`),
- `rewrites`: the policy rewriting a failure ("make it different", through any backend),
- `proposed`: the policy writing new problems from an in-context example,
- `generator`: fresh seeds from the domain generator, at the curriculum's level mix,

plus an anchor share (`keep_original`) of the first generation's seeds against drift. Model
output is kept only when the domain computes its answer (`Domain.read_problem`). A source that
comes up short hands its quota to the generator, so the set keeps its size.

Curriculum, departing from a fixed schedule: each level's weight is the learning signal of its
measured pass rate p, p(1-p) (zero for a level always or never solved, the groups of rejection
sampling and GRPO then carry no signal), plus a small floor so no level vanishes. Levels not yet
measured are estimated from their neighbours (one level harder: half the pass rate). The mix
reaches one level past the hardest level the policy solves more often than the floor
(`frontier`), no further: the floor alone gave every level of the domain a share, and a weak
policy spent two-fifths of its fresh seeds on levels it had never solved. The same signal
down-weights single too-easy or impossible seeds when failures are picked.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from tasks.domains import Domain, make_seeds
from tasks.hygiene import TOKEN_RE
from tasks.records import Seed
from tasks.seedfile import SeedFileError

__all__ = [
    "SOURCES",
    "SeedFileError",
    "NextSeeds",
    "estimate_levels",
    "evolve",
    "failure_pool",
    "frontier",
    "level_pass_rates",
    "level_weights",
    "model_prompts",
    "quotas",
    "signal",
    "weighted_sample",
]

SOURCES = ("generator", "failures", "mutations", "rewrites", "proposed")


def signal(p: float) -> float:
    """Learning signal of a pass rate: the variance of a pass/fail outcome."""
    return p * (1.0 - p)


def level_pass_rates(seeds: list[Seed], pass_rates: dict[str, float]) -> dict[int, float]:
    """Mean measured pass rate per difficulty level."""
    by_level: dict[int, list[float]] = {}
    for s in seeds:
        if s.id in pass_rates:
            by_level.setdefault(s.difficulty, []).append(pass_rates[s.id])
    return {lv: sum(v) / len(v) for lv, v in sorted(by_level.items())}


def estimate_levels(measured: dict[int, float], max_difficulty: int) -> dict[int, float]:
    """Pass rate per level 1..max: measured where known; a level above a known one is taken
    to pass half as often, a level below one to fail half as often."""
    est = dict(measured)
    for lv in range(1, max_difficulty + 1):  # upwards from the nearest easier level
        if lv not in est and lv - 1 in est:
            est[lv] = est[lv - 1] / 2
    for lv in range(max_difficulty, 0, -1):  # downwards from the nearest harder level
        if lv not in est and lv + 1 in est:
            est[lv] = (1 + est[lv + 1]) / 2
    return {lv: est.get(lv, 0.5) for lv in range(1, max_difficulty + 1)}


def frontier(measured: dict[int, float], max_difficulty: int, floor: float) -> int:
    """The hardest level the curriculum draws: one past the hardest measured level the policy
    solves more often than `floor` (the lowest measured level when it solves none); every level
    when nothing is measured."""
    if not measured:
        return max_difficulty
    reached = max((lv for lv, p in measured.items() if p > floor), default=min(measured) - 1)
    return max(1, min(max_difficulty, reached + 1))


def level_weights(
    measured: dict[int, float], max_difficulty: int, floor: float
) -> dict[int, float]:
    """Curriculum: each level's share of fresh seeds, p(1-p) + floor, normalised, up to the
    `frontier`; the levels past it get none."""
    est = estimate_levels(measured, max_difficulty)
    top = frontier(measured, max_difficulty, floor)
    raw = {lv: signal(p) + floor if lv <= top else 0.0 for lv, p in est.items()}
    total = sum(raw.values())
    return {lv: w / total for lv, w in raw.items()}


def weighted_sample(items: list, weight: Callable, k: int, rng: random.Random) -> list:
    """k items without replacement, each drawn in proportion to its weight
    (Efraimidis-Spirakis keys); items of weight 0 only after all others."""
    keyed = []
    for item in items:
        w = weight(item)
        u = rng.random() or 1e-12
        keyed.append((math.log(u) / w if w > 0 else -math.inf, item))
    keyed.sort(key=lambda t: t[0], reverse=True)
    return [item for _, item in keyed[:k]]


def quotas(weights: dict[str, float], total: int) -> dict[str, int]:
    """Seeds per source: `total` split by weight, largest remainders first."""
    live = {k: w for k, w in weights.items() if w > 0}
    if not live or total <= 0:
        return dict.fromkeys(weights, 0)
    norm = sum(live.values())
    exact = {k: total * w / norm for k, w in live.items()}
    out = {k: int(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: exact[k] - out[k], reverse=True)[
        : total - sum(out.values())
    ]:
        out[k] += 1
    return {k: out.get(k, 0) for k in weights}


def failure_pool(
    previous: list[Seed], pass_rates: dict[str, float], failure_below: float
) -> list[Seed]:
    """Seeds the model failed or half-solved (pass rate <= failure_below)."""
    return [s for s in previous if pass_rates.get(s.id, 0.0) <= failure_below]


def _pick_failures(
    pool: list[Seed], pass_rates: dict[str, float], k: int, floor: float, rng: random.Random
) -> list[Seed]:
    return weighted_sample(pool, lambda s: signal(pass_rates.get(s.id, 0.0)) + floor, k, rng)


def _prefix(question: str) -> str:
    """The question cut after its first half of tokens (ending on a token), for rewrites."""
    spans = [m.end() for m in TOKEN_RE.finditer(question)]
    if len(spans) < 2:
        return question
    keep = max(1, (len(spans) // 2) | 1)  # odd: for `a-b+c` that ends on an operand
    return question[: spans[keep - 1]]


def _head(question: str) -> str:
    """The question's first token: the seed of a proposal."""
    m = TOKEN_RE.search(question)
    return question[: m.end()] if m else question


@dataclass(frozen=True)
class ModelPrompt:
    kind: str  # rewrites | proposed
    prompt: str
    source_id: str


def model_prompts(
    previous: list[Seed],
    pass_rates: dict[str, float],
    quota: dict[str, int],
    *,
    failure_below: float,
    floor: float,
    rewrite_template: str,
    propose_template: str,
    samples: int,
    oversample: float,
    rng: random.Random,
) -> list[ModelPrompt]:
    """Prompts for the policy: rewrites of picked failures, proposals from solved examples.

    Templates take `{question}` (the whole seed), `{prefix}` (its first half) and `{head}` (its
    first token). Enough prompts are made for `oversample` x the quota at `samples` each.
    """
    out = []
    pools = {
        "rewrites": failure_pool(previous, pass_rates, failure_below),
        "proposed": [s for s in previous if pass_rates.get(s.id, 0.0) > 0] or previous,
    }
    templates = {"rewrites": rewrite_template, "proposed": propose_template}
    for kind in ("rewrites", "proposed"):
        need = math.ceil(quota.get(kind, 0) * oversample / samples)
        if need <= 0 or not pools[kind]:
            continue
        if kind == "rewrites":
            picked = _pick_failures(pools[kind], pass_rates, need, floor, rng)
        else:
            picked = rng.sample(pools[kind], min(need, len(pools[kind])))
        seen = set()
        for s in picked:
            text = templates[kind].format(
                question=s.question, prefix=_prefix(s.question), head=_head(s.question)
            )
            if text not in seen:  # identical prompts would draw identical samples
                seen.add(text)
                out.append(ModelPrompt(kind, text, s.id))
    return out


def problem_text(prompt: str, completion: str, marker: str) -> str:
    """What the model wrote as a problem: after the last `marker` in prompt + completion, up
    to the end of that line (a continuation of `Q: 13-` and an answer `Q: 5+7` both work)."""
    text = prompt + completion
    at = text.rfind(marker)
    tail = text[at + len(marker) :] if at >= 0 else completion
    return tail.split("\n", 1)[0].split("<", 1)[0].strip()


@dataclass(frozen=True)
class NextSeeds:
    seeds: list[Seed]
    counts: dict[str, int]  # seeds per source
    level_weights: dict[int, float]
    level_rates: dict[int, float]
    short: dict[str, int] = field(default_factory=dict)  # quota a source could not fill


def evolve(
    previous: list[Seed],
    pass_rates: dict[str, float],
    original: list[Seed],
    domain: Domain,
    *,
    count: int,
    sources: dict[str, float],
    keep_original: float,
    failure_below: float,
    floor: float,
    rng: random.Random,
    exclude: set[str],
    model_seeds: dict[str, list[Seed]] | None = None,
) -> NextSeeds:
    """The next seed set: anchor share of `original`, then each source's quota; `model_seeds`
    holds the policy's rewrites and proposals, already read by `domain.read_problem`."""
    model_seeds = model_seeds or {}
    rates = level_pass_rates(previous, pass_rates)
    weights = level_weights(rates, domain.max_difficulty, floor)
    chosen: dict[str, Seed] = {}

    def add(batch: list[Seed], origin: str, k: int) -> int:
        n = 0
        for s in batch:
            if n >= k:
                break
            if s.question in exclude or s.question in chosen:
                continue
            chosen[s.question] = Seed(s.id, s.question, s.answer, s.difficulty, origin)
            n += 1
        return n

    counts: Counter[str] = Counter()
    n_orig = int(keep_original * count)
    counts["original"] = add(rng.sample(original, min(n_orig, len(original))), "original", n_orig)
    quota = quotas({k: sources.get(k, 0.0) for k in SOURCES}, count - counts["original"])
    pool = failure_pool(previous, pass_rates, failure_below)
    failed = _pick_failures(pool, pass_rates, len(pool), floor, rng)
    counts["failures"] = add(failed, "failures", quota["failures"])
    mutated = [domain.mutate(s, rng) for s in failed[: 2 * quota["mutations"]]]
    counts["mutations"] = add(mutated, "mutations", quota["mutations"])
    for kind in ("rewrites", "proposed"):
        counts[kind] = add(model_seeds.get(kind, []), kind, quota[kind])
    short = {k: quota[k] - counts[k] for k in SOURCES if k != "generator" and quota[k] > counts[k]}
    n_fresh = count - len(chosen)
    levels = list(weights)
    drawn = rng.choices(levels, weights=[weights[lv] for lv in levels], k=n_fresh)
    fresh = make_seeds(domain, n_fresh, drawn, rng, exclude | set(chosen), origin="generator")
    counts["generator"] = add(fresh, "generator", n_fresh)
    return NextSeeds(
        list(chosen.values()),
        {k: v for k, v in counts.items() if v},
        weights,
        rates,
        short,
    )
