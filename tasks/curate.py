"""Rejection sampling: which generated samples become training data. Pure; no I/O.

Every sample gets one verdict from the gating rewards (the first that rejects names the reason;
any `infra_error` wins over a reject, since a broken verifier says nothing about the model).
Accepted samples then go through exact-duplicate removal and a best-of-n cap per seed that
prefers the shortest correct completions (short, correct chains are the cheapest to learn and
the least likely to carry filler).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from tasks.records import Sample, Verdict
from tasks.rewards import REWARDS, verdict_score


@dataclass
class Curated:
    kept: list[Sample]
    rows: list[dict]  # one per sample: id, seed_id, outcome, reason, kept, per-reward scores
    counts: dict[str, int] = field(default_factory=dict)
    seed_pass_rate: dict[str, float] = field(default_factory=dict)


def sample_verdicts(samples: list[Sample], rewards: list[str], domain: str) -> list[tuple]:
    """(verdict, {reward: score|None}) per sample."""
    completions = [s.completion for s in samples]
    columns = {
        "prompts": [s.prompt for s in samples],
        "answer": [s.answer for s in samples],
        "num_tokens": [s.num_tokens for s in samples],
        "domain": domain,
    }
    per_reward = {name: REWARDS[name][1](completions, **columns) for name in rewards}
    out = []
    for i, s in enumerate(samples):
        verdicts = {name: per_reward[name][i] for name in rewards}
        scores = {name: verdict_score(v) for name, v in verdicts.items()}
        infra = [f"{n}:{v.reason}" for n, v in verdicts.items() if v.outcome == "infra_error"]
        rejects = [f"{n}:{v.reason}" for n, v in verdicts.items() if v.outcome == "reject"]
        if infra:
            verdict = Verdict("infra_error", infra[0])
        elif s.finish_reason == "length":
            verdict = Verdict("reject", "truncated")
        elif rejects:
            verdict = Verdict("reject", rejects[0])
        else:
            verdict = Verdict("accept", "all_rewards_passed")
        out.append((verdict, scores))
    return out


def curate(samples: list[Sample], rewards: list[str], domain: str, max_per_seed: int) -> Curated:
    judged = sample_verdicts(samples, rewards, domain)
    rows, counts = [], Counter()
    by_seed: dict[str, list[Sample]] = defaultdict(list)
    seen_per_seed: dict[str, int] = defaultdict(int)
    accepted_per_seed: dict[str, int] = defaultdict(int)
    for s, (verdict, scores) in zip(samples, judged, strict=True):
        counts[verdict.outcome] += 1
        counts[f"{verdict.outcome}:{verdict.reason}"] += 1
        seen_per_seed[s.seed_id] += 1
        if verdict.outcome == "accept":
            accepted_per_seed[s.seed_id] += 1
            by_seed[s.seed_id].append(s)
        rows.append(
            {
                "sample_id": s.id,
                "seed_id": s.seed_id,
                "outcome": verdict.outcome,
                "reason": verdict.reason,
                "kept": False,
                **{f"reward_{k}": v for k, v in scores.items()},
            }
        )
    kept_ids: set[str] = set()
    for group in by_seed.values():
        distinct: dict[str, Sample] = {}
        for s in sorted(group, key=lambda s: (s.num_tokens, s.sample_index)):
            key = s.completion.strip()
            if key in distinct:
                counts["dropped:duplicate"] += 1
            elif len(distinct) >= max_per_seed:
                counts["dropped:over_cap"] += 1
            else:
                distinct[key] = s
        kept_ids.update(s.id for s in distinct.values())
    for row in rows:
        row["kept"] = row["sample_id"] in kept_ids
    kept = [s for s in samples if s.id in kept_ids]
    counts["kept"] = len(kept)
    rates = {sid: accepted_per_seed[sid] / n for sid, n in seen_per_seed.items()}
    return Curated(kept=kept, rows=rows, counts=dict(counts), seed_pass_rate=rates)


def merge_pool(pools: list[list[dict]]) -> list[dict]:
    """Union of accepted-sample tables, first occurrence of each (prompt, completion) wins."""
    seen, out = set(), []
    for pool in pools:
        for row in pool:
            key = (row["prompt"], row["completion"].strip())
            if key not in seen:
                seen.add(key)
                out.append(row)
    return out
