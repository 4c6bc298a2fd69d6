"""Rewards: plain functions with TRL's reward signature, listed in one dict by name.

`f(prompts, completions, **columns) -> list[float | None]`; `None` means the reward could not be
computed for that sample (an infrastructure failure, never a wrong answer). The same dict drives
rejection sampling (curate), GRPO and evaluation. `*_verdicts` functions give the reason behind
each score, which curation counts.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from tasks.domains import DOMAINS
from tasks.records import Verdict

_FORMAT = re.compile(
    r"\s*<think>(?P<think>.*?)</think>\s*<answer>(?P<answer>.*?)</answer>\s*", re.S
)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.S)


def extract_answer(completion: str) -> str | None:
    """The text of the last `<answer>…</answer>`, or None."""
    found = _ANSWER.findall(completion)
    return found[-1].strip() if found else None


def format_verdict(completion: str) -> Verdict:
    """R1 format: exactly one think block then one answer block, nothing around them."""
    m = _FORMAT.fullmatch(completion)
    if not m:
        return Verdict("reject", "bad_format")
    if "<think>" in m["think"] or "<answer>" in m["answer"] or "</think>" in m["answer"]:
        return Verdict("reject", "bad_format")
    if not m["answer"].strip():
        return Verdict("reject", "empty_answer")
    return Verdict("accept", "well_formed")


def accuracy_verdict(completion: str, answer: str | None, domain: str) -> Verdict:
    if answer is None:
        return Verdict("infra_error", "no_gold_answer")
    predicted = extract_answer(completion)
    if predicted is None:
        return Verdict("reject", "no_answer")
    try:
        return DOMAINS[domain].verify(predicted, answer)
    except Exception as e:  # a verifier crash is not the model's fault
        return Verdict("infra_error", f"verifier_error: {type(e).__name__}")


def verdict_score(v: Verdict) -> float | None:
    """A verdict as a reward: 1 accept, 0 reject, None when it could not be computed."""
    return None if v.outcome == "infra_error" else float(v.outcome == "accept")


def format_verdicts(completions: list[str], **_: object) -> list[Verdict]:
    return [format_verdict(c) for c in completions]


def accuracy_verdicts(
    completions: list[str], answer: list[str | None], domain: list[str] | str = "arith", **_: object
) -> list[Verdict]:
    domains = [domain] * len(completions) if isinstance(domain, str) else domain
    return [accuracy_verdict(c, a, d) for c, a, d in zip(completions, answer, domains, strict=True)]


def format_reward(prompts: list[str], completions: list[str], **kw: object) -> list[float | None]:
    return [verdict_score(v) for v in format_verdicts(completions, **kw)]


def accuracy_reward(prompts: list[str], completions: list[str], **kw) -> list[float | None]:
    return [verdict_score(v) for v in accuracy_verdicts(completions, **kw)]


def judge_verdicts(
    completions: list[str],
    question: list[str] | None = None,
    prompts: list[str] | None = None,
    judge_verdict: list[Verdict] | None = None,
    judge: dict | None = None,
    **_: object,
) -> list[Verdict]:
    """The generative judge's verdicts (see `tasks.judge`).

    Precomputed votes (`judge_verdict`, as curation passes them after one batched worker run)
    are returned as they are; otherwise `judge` (the worker's settings: model_path, rubric, k,
    ...) runs the judge over this batch in one engine call, on `question` or else `prompts`.
    """
    if judge_verdict is not None:
        if len(judge_verdict) != len(completions):
            raise ValueError(
                f"judge_verdict has {len(judge_verdict)} rows for {len(completions)} completions"
            )
        return list(judge_verdict)
    if judge is None:
        raise ValueError(
            "the `judge` reward needs the judge's settings (`judge=` column) or precomputed "
            "`judge_verdict`; in curation, list `judge` in curation.rewards and set `judge:`"
        )
    from tasks.judge_run import judge_candidates

    texts = question if question is not None else prompts
    if texts is None:
        raise ValueError("the `judge` reward needs a `question` column or the prompts")
    votes, _stats = judge_candidates(list(texts), list(completions), judge)
    return [v.verdict for v in votes]


def judge_reward(prompts: list[str], completions: list[str], **kw) -> list[float | None]:
    return [verdict_score(v) for v in judge_verdicts(completions, prompts=prompts, **kw)]


def rm_verdicts(
    completions: list[str],
    prompts: list[str] | None = None,
    rm_model: str | None = None,
    rm_score: list[float] | None = None,
    **_: object,
) -> list[Verdict]:
    """The scalar reward model's verdicts: accept when P(accept) >= 0.5 (`flywheel train-rm`).

    Scores come precomputed (`rm_score`) or from the model at `rm_model`, in a worker process.
    """
    if rm_score is None:
        if rm_model is None or prompts is None:
            raise ValueError("the `rm` reward needs `rm_model` (a train-rm folder) and prompts")
        from tasks.reward_model import rm_scores

        rm_score = rm_scores(rm_model, list(prompts), list(completions))
    return [Verdict("accept" if p >= 0.5 else "reject", f"rm_p={p:.2f}") for p in rm_score]


def rm_reward(prompts: list[str], completions: list[str], **kw) -> list[float | None]:
    """The reward model's P(accept) itself: a graded reward for GRPO."""
    if kw.get("rm_score") is None:
        from tasks.reward_model import rm_scores

        if kw.get("rm_model") is None:
            raise ValueError("the `rm` reward needs `rm_model` (a train-rm folder)")
        return list(rm_scores(kw["rm_model"], list(prompts), list(completions)))
    return list(kw["rm_score"])


Reward = Callable[..., list[float | None]]

# name -> (reward function with TRL's signature, the verdicts behind it)
REWARDS: dict[str, tuple[Reward, Callable[..., list[Verdict]]]] = {
    "accuracy": (accuracy_reward, accuracy_verdicts),
    "format": (format_reward, format_verdicts),
    "judge": (judge_reward, judge_verdicts),
    "rm": (rm_reward, rm_verdicts),
}
