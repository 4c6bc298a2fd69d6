"""Evaluation metrics over k samples per held-out item. Pure; no I/O.

pass@1 is the mean over the k samples (not one greedy sample), pass@k uses the unbiased
estimator of Chen et al. (2021), maj@k is the share of items whose majority answer is correct.
Every item keeps its own figures so a later gate can pair items.

maj@k votes with `tasks.rewards.majority_answer`: answers are grouped by the domain verifier's
notion of "the same answer" (math `0.5` and `1/2` are one vote group), answers the verifier
would not accept against themselves (unparsable, arith `007`) are no votes, and a tie for the
top is no majority: such an item counts as not majority-correct. One valid answer is its own
majority, so maj@1 equals pass@1 on the same sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb

from tasks.rewards import accuracy_verdict, extract_answer, format_verdict, majority_answer


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn from n (c correct) is correct."""
    if not 0 <= c <= n or not 0 < k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 0 < k <= n; got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


@dataclass(frozen=True)
class ItemResult:
    item_id: str
    difficulty: int
    n: int
    correct: int
    formatted: int
    truncated: int
    majority_correct: bool
    mean_tokens: float


def score_item(
    item_id: str,
    difficulty: int,
    gold: str,
    domain: str,
    completions: list[str],
    num_tokens: list[int],
    finish_reasons: list[str],
) -> ItemResult:
    correct = [accuracy_verdict(c, gold, domain).outcome == "accept" for c in completions]
    answers = [extract_answer(c) for c in completions]
    top = majority_answer(answers, domain)
    majority_correct = top is not None and correct[answers.index(top)]
    return ItemResult(
        item_id=item_id,
        difficulty=difficulty,
        n=len(completions),
        correct=sum(correct),
        formatted=sum(format_verdict(c).outcome == "accept" for c in completions),
        truncated=sum(r == "length" for r in finish_reasons),
        majority_correct=majority_correct,
        mean_tokens=sum(num_tokens) / max(len(num_tokens), 1),
    )


def report(items: list[ItemResult], k: int) -> dict[str, float]:
    """Suite-level metrics, plus pass@1 per difficulty level."""
    if not items:
        raise ValueError("cannot report on an empty evaluation")
    total = sum(i.n for i in items)
    out = {
        "pass@1": sum(i.correct / i.n for i in items) / len(items),
        f"pass@{k}": sum(pass_at_k(i.n, i.correct, min(k, i.n)) for i in items) / len(items),
        f"maj@{k}": sum(i.majority_correct for i in items) / len(items),
        "format_rate": sum(i.formatted for i in items) / total,
        "truncation_rate": sum(i.truncated for i in items) / total,
        "mean_tokens": sum(i.mean_tokens * i.n for i in items) / total,
        "items": float(len(items)),
    }
    for level in sorted({i.difficulty for i in items}):
        group = [i for i in items if i.difficulty == level]
        out[f"pass@1_level{level}"] = sum(i.correct / i.n for i in group) / len(group)
    return out
