"""Rejection sampling: which generated samples become training data. Pure; no I/O.

Every sample gets one verdict from the gating rewards and the engine's truncation flag: a
truncated completion is rejected, else the first reward that rejects names the reason, else an
`infra_error` (a broken verifier says nothing about the model, so it is never a reject) keeps
the sample out without counting against it. With the judge listed, every rule that can apply
still does; only the answer check is "not applicable" where a sample has no gold answer (see
`sample_verdicts`). Rules with settings get the configured ones (`rule_settings`). A
rationalization sample (template `rationalize`, made with the answer as a hint) is accepted only
where the answer check also accepts it, whatever the rewards, and counts in no seed's pass rate
(`tasks.rationalize`).
Accepted samples then go through duplicate removal (exact on normalised text, and
near-duplicates within a seed by MinHash; see `tasks.hygiene`) and a best-of-n cap per seed that
prefers the shortest correct completions (short, correct chains are the cheapest to learn and
the least likely to carry filler). The clusters left after dedup are the seed's distinct
reasoning paths, counted per seed. Diversity figures of the generation ride along.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from tasks.hygiene import dedup, diversity, exact_key
from tasks.judge import combine as combine_verdicts
from tasks.rationalize import RATIONALIZE, answer_checks, must_verify
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
    paths: dict[str, int] = field(default_factory=dict)  # distinct reasoning paths per seed
    diversity: dict[str, dict[str, float]] = field(default_factory=dict)  # generated / accepted


ANSWER_RULE = "accuracy"  # the one rule that checks the answer against the gold one


def rule_settings(max_tokens: int, length_buffer: int, repetition_ngram: int) -> dict[str, dict]:
    """The configured settings of the rules that take any, keyed by reward name: the `length`
    reward's limit is the sampling budget (`sampling.max_tokens`), so a completion is judged
    against the length it was allowed, not the reward module's default."""
    return {
        "length": {"length_limit": max_tokens, "length_buffer": length_buffer},
        "repetition": {"ngram": repetition_ngram},
    }


def _joint(verdicts: dict[str, Verdict], truncated: bool) -> Verdict:
    """One verdict from several rules': truncated output is rejected first, then the first
    reject stands (a rule that did decide is not overruled by one that could not), then the
    first infra_error (a broken verifier says nothing about the model), else accept."""
    if truncated:
        return Verdict("reject", "truncated")
    for outcome in ("reject", "infra_error"):
        for name, v in verdicts.items():
            if v.outcome == outcome:
                return Verdict(outcome, f"{name}:{v.reason}")
    return Verdict("accept", "all_rewards_passed")


def sample_verdicts(
    samples: list[Sample],
    rewards: list[str],
    domain: str,
    columns: dict | None = None,
    combine: str = "rules_then_judge",
    settings: dict[str, dict] | None = None,
) -> list[tuple]:
    """(verdict, {reward: score|None}, rules' verdict|None) per sample.

    `columns` go to every reward (the judge's precomputed votes travel this way); `settings`
    (see `rule_settings`) only to the reward they are keyed by. Truncation (the engine's
    `finish_reason`) is a rule of every curation, judge or not. With `judge` among the rewards,
    every rule that can apply still applies: format, truncation, length, repetition, ... reject
    whatever the judge says, and only the answer check (`accuracy`) is not applicable to a
    sample without a gold answer; the answer check and the judge combine by `judge.combine`
    (`tasks.judge.combine`). The rules' verdict returned for judge QC is None where the rules
    could not check the answer.
    """
    completions = [s.completion for s in samples]
    cols = {
        "prompts": [s.prompt for s in samples],
        "answer": [s.answer for s in samples],
        "num_tokens": [s.num_tokens for s in samples],
        "domain": domain,
        **(columns or {}),
    }
    per_reward = {
        name: REWARDS[name][1](completions, **{**cols, **(settings or {}).get(name, {})})
        for name in rewards
    }
    # A rationalization (hinted) sample must also pass the answer check, whatever the rewards.
    hinted = [i for i, s in enumerate(samples) if s.template == RATIONALIZE]
    verify = dict(zip(hinted, answer_checks([samples[i] for i in hinted], domain), strict=True))
    out = []
    for i, s in enumerate(samples):
        verdicts = {name: per_reward[name][i] for name in rewards}
        scores = {name: verdict_score(v) for name, v in verdicts.items()}
        truncated = s.finish_reason == "length"
        rule_verdicts = {n: v for n, v in verdicts.items() if n != JUDGE}
        rules = _joint(rule_verdicts, truncated)
        answer = rule_verdicts.get(ANSWER_RULE)
        if answer is not None:  # None: not applicable, nothing to check the answer against
            answer = None if answer.reason == NO_GOLD else _joint({ANSWER_RULE: answer}, False)
        checked = rules if answer is not None else None  # for judge QC
        verdict = rules
        if JUDGE in verdicts:
            checks = _joint({n: v for n, v in rule_verdicts.items() if n != ANSWER_RULE}, truncated)
            judge = verdicts[JUDGE]
            judge = Verdict(judge.outcome, f"{JUDGE}:{judge.reason}")
            verdict = combine_verdicts(combine, checks, answer, judge)
        if i in verify:
            verdict = must_verify(verdict, verify[i])
        out.append((verdict, scores, checked))
    return out


class Curation:
    """Rejection sampling fed a few whole seeds at a time (`add`), in seed-id order, so a
    generation of any size is curated one bucket of seeds at a time (`tasks.curate_stream`).

    Everything a decision needs lies inside one seed: its verdicts, near-duplicates (counted
    per seed), the cap. The one exception is an exact duplicate, which `curate` looks up across
    all accepted samples (the prompt is part of the text, so only two seeds with the same
    prompt can share one): the first occurrence in (seed id, length, index) order wins, so the
    exact keys seen so far are kept across buckets, with the id of the cluster they joined."""

    def __init__(
        self,
        rewards: list[str],
        domain: str,
        max_per_seed: int,
        *,
        near_dup: float | None = None,
        shingle: int = 5,
        num_perm: int = 128,
        combine: str = "rules_then_judge",
        settings: dict[str, dict] | None = None,
    ):
        self.rewards, self.domain, self.max_per_seed = rewards, domain, max_per_seed
        self.near_dup, self.shingle, self.num_perm = near_dup, shingle, num_perm
        self.combine, self.settings = combine, settings
        self.counts: Counter[str] = Counter()
        self.seen_per_seed: dict[str, int] = defaultdict(int)
        self.accepted_per_seed: dict[str, int] = defaultdict(int)
        self.paths: dict[str, int] = {}  # distinct reasoning paths per seed with any accepted
        self.kept = 0
        self._clusters: dict[str, int] = {}  # exact key -> id of the cluster it belongs to
        self._next_cluster = 0

    def add(self, samples: list[Sample], columns: dict | None = None) -> Bucket:
        """Curate `samples`, which hold every sample of their seeds (in input order; seed ids
        all after those of earlier calls). `columns` are per-sample, aligned with `samples`."""
        judged = sample_verdicts(
            samples, self.rewards, self.domain, columns, self.combine, self.settings
        )
        rows, accepted = [], []
        for i, (s, (verdict, scores, _rules)) in enumerate(zip(samples, judged, strict=True)):
            self.counts[verdict.outcome] += 1
            self.counts[f"{verdict.outcome}:{verdict.reason}"] += 1
            hinted = s.template == RATIONALIZE
            if hinted:  # told the answer: not the policy's own pass rate (`tasks.rationalize`)
                self.counts[f"{RATIONALIZE}:{verdict.outcome}"] += 1
            else:
                self.seen_per_seed[s.seed_id] += 1
            if verdict.outcome == "accept":
                if not hinted:
                    self.accepted_per_seed[s.seed_id] += 1
                accepted.append(i)
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
        # Shortest first inside each seed, so the representative of each cluster is its shortest.
        accepted.sort(
            key=lambda i: (samples[i].seed_id, samples[i].num_tokens, samples[i].sample_index)
        )
        kept = sorted(accepted[j] for j in self._select([samples[i] for i in accepted]))
        for i in kept:
            rows[i]["kept"] = True
            if samples[i].template == RATIONALIZE:
                self.counts[f"{RATIONALIZE}:kept"] += 1
        self.kept += len(kept)
        return Bucket(rows, kept, [r for _, _, r in judged])

    def _select(self, accepted: list[Sample]) -> list[int]:
        """Positions in `accepted` (sorted) that survive dedup and the cap; counts the drops and
        each seed's reasoning paths."""
        texts = [s.prompt + "\n" + s.completion for s in accepted]
        keys = [exact_key(t) for t in texts]
        fresh = [j for j, k in enumerate(keys) if k not in self._clusters]
        d = dedup(
            [texts[j] for j in fresh],
            near_threshold=self.near_dup,
            shingle=self.shingle,
            num_perm=self.num_perm,
            groups=[accepted[j].seed_id for j in fresh],
        )
        self.counts["dropped:duplicate"] += len(accepted) - len(fresh) + d.exact
        self.counts["dropped:near_duplicate"] += d.near
        cluster = [self._clusters.get(k, -1) for k in keys]  # earlier buckets' duplicates
        for f, j in enumerate(fresh):
            cluster[j] = self._next_cluster + d.cluster[f]
            self._clusters.setdefault(keys[j], cluster[j])
        self._next_cluster += len(fresh)
        paths: dict[str, set[int]] = defaultdict(set)
        for s, c in zip(accepted, cluster, strict=True):
            paths[s.seed_id].add(c)
        self.paths.update((sid, len(p)) for sid, p in paths.items())
        out: list[int] = []
        per_seed: Counter[str] = Counter()
        for f in d.keep:
            s = accepted[fresh[f]]
            if per_seed[s.seed_id] >= self.max_per_seed:
                self.counts["dropped:over_cap"] += 1
                continue
            per_seed[s.seed_id] += 1
            out.append(fresh[f])
        return out

    def totals(self) -> dict[str, int]:
        """Counts by outcome, by outcome:reason, of each drop, and of the kept samples."""
        counts = {k: v for k, v in self.counts.items() if v or not k.startswith("dropped")}
        return {**counts, "kept": self.kept}

    def seed_pass_rate(self, order: Iterable[str] | None = None) -> dict[str, float]:
        """Accepted / generated per seed, hinted samples left out, in `order` (default: first
        seen first)."""
        seeds = self.seen_per_seed if order is None else order
        return {sid: self.accepted_per_seed[sid] / max(self.seen_per_seed[sid], 1) for sid in seeds}

    def path_counts(self, order: Iterable[str] | None = None) -> dict[str, int]:
        """Distinct reasoning paths per seed (0 where none was accepted), in `order`."""
        seeds = self.seen_per_seed if order is None else order
        return {sid: self.paths.get(sid, 0) for sid in seeds}


@dataclass
class Bucket:
    """What `Curation.add` decided for one bucket of samples, aligned with its input."""

    rows: list[dict]  # one per sample: id, seed_id, outcome, reason, kept, per-reward scores
    kept: list[int]  # positions of the kept samples, ascending
    rules: list[Verdict | None]  # the rules' verdict per sample (judge QC)


def curate(samples: list[Sample], *args, columns: dict | None = None, **kwargs) -> Curated:
    """All of `samples` curated in memory, as one bucket of `Curation(*args, **kwargs)`;
    `columns` are per-sample reward inputs (`Curation.add`)."""
    c = Curation(*args, **kwargs)
    b = c.add(samples, columns)
    kept = [samples[i] for i in b.kept]
    return Curated(
        kept=kept,
        rows=b.rows,
        counts=c.totals(),
        seed_pass_rate=c.seed_pass_rate(),
        paths=c.path_counts(),
        diversity={
            "generated": diversity([s.completion for s in samples]),
            "accepted": diversity([s.completion for s in kept]),
        },
        rules=b.rules,
    )


def merge_pool(pools: list[list[dict]]) -> list[dict]:
    """Union of accepted-sample tables, first occurrence of each (prompt, completion) wins;
    completions are compared normalised, as in `curate`."""
    seen, out = set(), []
    for pool in pools:
        for row in pool:
            key = (row["prompt"], exact_key(row["completion"]))
            if key not in seen:
                seen.add(key)
                out.append(row)
    return out


def mix_replay(
    current: list[dict], earlier: list[dict], share: float | None, seed: int
) -> list[dict]:
    """Training rows: this generation's pool plus earlier accepted data, the earlier part
    making up `share` of the result (None: all earlier rows). Duplicates of a current row are
    dropped first; the earlier rows kept are a seeded random draw, so a rerun is identical."""
    n_fresh = len(merge_pool([current]))
    pool = merge_pool([current, earlier])
    fresh, old = pool[:n_fresh], pool[n_fresh:]
    if share is None:
        return fresh + old
    want = round(share / (1 - share) * len(fresh)) if fresh else len(old)
    rng = random.Random(seed)
    return fresh + rng.sample(old, min(want, len(old)))
