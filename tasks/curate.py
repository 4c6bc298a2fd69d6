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

from tasks.judge import COMBINE
from tasks.records import Sample, Verdict
from tasks.rewards import REWARDS, verdict_score

JUDGE = "judge"  # the reward name of the generative judge
NO_GOLD = "no_gold_answer"  # the rules' reason when a sample has nothing to check against


@dataclass
class Curated:
    kept: list[Sample]
    rows: list[dict]  # one per sample: id, seed_id, outcome, reason, kept, per-reward scores
    counts: dict[str, int] = field(default_factory=dict)
    seed_pass_rate: dict[str, float] = field(default_factory=dict)
    rules: list[Verdict | None] = field(default_factory=list)  # the rules' verdict per sample


def _aggregate(verdicts: dict[str, Verdict], truncated: bool) -> Verdict | None:
    """One verdict from several rewards' (None when there are none)."""
    if not verdicts:
        return None
    infra = [f"{n}:{v.reason}" for n, v in verdicts.items() if v.outcome == "infra_error"]
    rejects = [f"{n}:{v.reason}" for n, v in verdicts.items() if v.outcome == "reject"]
    if infra:
        return Verdict("infra_error", infra[0])
    if truncated:
        return Verdict("reject", "truncated")
    if rejects:
        return Verdict("reject", rejects[0])
    return Verdict("accept", "all_rewards_passed")


def sample_verdicts(
    samples: list[Sample],
    rewards: list[str],
    domain: str,
    columns: dict | None = None,
    combine: str = "rules_then_judge",
) -> list[tuple]:
    """(verdict, {reward: score|None}, rules' verdict|None) per sample.

    `columns` go to every reward (the judge's precomputed votes travel this way). With `judge`
    among the rewards, the rules' joint verdict and the judge's combine by `COMBINE[combine]`;
    a sample whose rules could not check it (no gold answer) counts as having no rule.
    """
    completions = [s.completion for s in samples]
    answers = [s.answer for s in samples]
    per_reward = {
        name: REWARDS[name][1](completions, answer=answers, domain=domain, **(columns or {}))
        for name in rewards
    }
    out = []
    for i, s in enumerate(samples):
        verdicts = {name: per_reward[name][i] for name in rewards}
        scores = {name: verdict_score(v) for name, v in verdicts.items()}
        truncated = s.finish_reason == "length"
        rules = _aggregate({n: v for n, v in verdicts.items() if n != JUDGE}, truncated)
        if JUDGE not in verdicts:
            out.append((rules, scores, rules))
            continue
        if rules is not None and rules.reason.endswith(NO_GOLD):
            rules = None
        judge = verdicts[JUDGE]
        judge = Verdict(judge.outcome, f"{JUDGE}:{judge.reason}")
        out.append((COMBINE[combine](rules, judge), scores, rules))
    return out


def curate(
    samples: list[Sample],
    rewards: list[str],
    domain: str,
    max_per_seed: int,
    columns: dict | None = None,
    combine: str = "rules_then_judge",
) -> Curated:
    judged = sample_verdicts(samples, rewards, domain, columns, combine)
    rows, counts = [], Counter()
    by_seed: dict[str, list[Sample]] = defaultdict(list)
    seen_per_seed: dict[str, int] = defaultdict(int)
    accepted_per_seed: dict[str, int] = defaultdict(int)
    for s, (verdict, scores, _rules) in zip(samples, judged, strict=True):
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
    return Curated(kept, rows, dict(counts), rates, [r for _, _, r in judged])


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
