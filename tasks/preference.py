"""Preference pairs from one generation's verdicts: a chosen (accepted) and a rejected sample of
the same seed, for DPO-style training. Pure; no I/O.

Rejection sampling already labels every sample of a seed: curation accepts some and rejects
others with a reason (a wrong answer, a malformed or truncated trace, one that runs past the
length budget, repeats itself, or that the judge turned down). A pair takes its chosen side
from the accepted ones and its rejected side from the rejected ones of the same seed, so both
answer the same prompt. `infra_error` samples never enter a pair: a verifier that broke says
nothing about the sample.

Pairing is deterministic: within a seed both sides are ordered by sample id and shuffled by a
generator seeded with (seed, seed id), so a seed's pairs depend on nothing else in the
generation. At most `per_seed` pairs are drawn per seed, and no more than the larger side
has samples: each side cycles through its own, so every sample of the smaller side serves
before one repeats and no pair repeats. Completions
are compared normalised (`tasks.hygiene.exact_key`): a copy of the chosen text is never its
rejected side, and a completion repeated within a side counts once.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass

from tasks.hygiene import exact_key
from tasks.records import Sample, Verdict, stable_hash


@dataclass(frozen=True)
class PreferencePair:
    """One prompt with a preferred and a dispreferred completion, and why each is which."""

    seed_id: str
    prompt: str  # the prompt as the policy trains on it (`Sample.prompt`)
    chosen: str
    rejected: str
    chosen_id: str
    rejected_id: str
    chosen_reason: str  # the verdict's reason (`all_rewards_passed`, ...)
    rejected_reason: str  # `accuracy:wrong_answer`, `truncated`, `format:...`, ...


def _distinct(samples: list[Sample]) -> list[Sample]:
    """Samples ordered by id, the first of each normalised completion kept."""
    seen, out = set(), []
    for s in sorted(samples, key=lambda s: s.id):
        key = exact_key(s.completion)
        if key not in seen:
            seen.add(key)
            out.append(s)
    return out


def preference_pairs(
    samples: list[Sample], verdicts: dict[str, Verdict], per_seed: int, seed: int
) -> list[PreferencePair]:
    """Pairs of every seed that has both an accepted and a rejected sample, seeds in order of
    first appearance in `samples`; `verdicts` maps each sample id to its curation verdict."""
    if per_seed < 1:
        raise ValueError(f"per_seed must be at least 1, got {per_seed}")
    missing = [s.id for s in samples if s.id not in verdicts]
    if missing:
        raise ValueError(f"{len(missing)} sample(s) have no verdict, e.g. {missing[0]!r}")
    by_seed: dict[str, dict[str, list[Sample]]] = defaultdict(lambda: defaultdict(list))
    for s in samples:
        by_seed[s.seed_id][verdicts[s.id].outcome].append(s)
    pairs = []
    for seed_id, groups in by_seed.items():
        chosen, rejected = _distinct(groups["accept"]), _distinct(groups["reject"])
        good = {exact_key(s.completion) for s in chosen}
        rejected = [s for s in rejected if exact_key(s.completion) not in good]
        if not chosen or not rejected:
            continue
        rng = random.Random(stable_hash("preference", seed, seed_id))
        rng.shuffle(chosen)
        rng.shuffle(rejected)
        for i in range(min(per_seed, max(len(chosen), len(rejected)))):
            c, r = chosen[i % len(chosen)], rejected[i % len(rejected)]
            pairs.append(
                PreferencePair(
                    seed_id=seed_id,
                    prompt=c.prompt,
                    chosen=c.completion,
                    rejected=r.completion,
                    chosen_id=c.id,
                    rejected_id=r.id,
                    chosen_reason=verdicts[c.id].reason,
                    rejected_reason=verdicts[r.id].reason,
                )
            )
    return pairs
