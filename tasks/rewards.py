"""Rewards: plain functions with TRL's reward signature, listed in one dict by name.

`f(prompts, completions, **columns) -> list[float | None]`; `None` means the reward could not be
computed for that sample (an infrastructure failure, never a wrong answer). The same dict drives
rejection sampling (curate), GRPO and evaluation. `*_verdicts` functions give the reason behind
each score, which curation counts (a sample is accepted only when every gating verdict accepts).

Columns the rewards read when present: `answer` (gold), `domain`, `question` (the bare question,
for the language check; else the rendered prompt), `num_tokens` or TRL's `completion_ids` (for
length; else characters). Settings (length limit, n-gram size) are keyword arguments with
defaults; `bound_reward` fixes them from the config and names the function after its key.
The rewards scored by a model (`judge`, `rm`) read that model's output from a column
(`judge_verdict`, `rm_score`) and refuse to run without it: a reward never starts a process;
the caller runs the model once over the whole batch, in its worker.

Ranges: accuracy, format, language and self-consistency lie in [0, 1]; length and repetition
are penalties in [-1, 0] (0 = no penalty), so adding them to a task reward never makes a
wrong answer worth more than a right one at equal weights. Departures from the papers:
- language: R1 scores the share of the CoT in the target *language*; here it is the share of
  CoT letters in the prompt's *script* (Unicode script of each letter), which needs no language
  model. Digits and symbols are neutral; a prompt with no letters takes the CoT's own majority
  script as the target, so mixing is still penalised.
- length: DAPO's soft overlong punishment, measured in tokens when the caller has them.
- repetition: the share of repeated word n-grams (CJK characters count as words).
- self_consistency: TTRL-style. Where a gold answer exists it is used (so the reward can replace
  `accuracy` on a mixed seed set); otherwise the group's majority answer (answers grouped by the
  domain's verifier, groups = samples sharing a prompt) is the pseudo-label. No majority (a tie,
  or fewer than two agreeing votes) gives None: there is no label to learn from.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence

from tasks.domains import DOMAINS
from tasks.records import Verdict

_TAGS = re.compile(r"</?(?:think|answer)>")
_R1_TAGS = ["<think>", "</think>", "<answer>", "</answer>"]
_FORMAT = re.compile(r"\s*<think>.*</think>\s*<answer>(?P<answer>.*)</answer>\s*", re.S)
# `<answer>`, text holding no other `<answer>`, `</answer>`: in `<answer>1<answer>2</answer>`
# only `2` is a block.
_ANSWER = re.compile(r"<answer>((?:(?!<answer>).)*?)</answer>", re.S)


def extract_answer(completion: str) -> str | None:
    """The text of the last complete `<answer>…</answer>` block, stripped; None if there is none.

    The one answer extractor of the project (rewards, metrics, hygiene). Where a completion holds
    several blocks (only a badly formatted one can), the last wins: a model that revises its
    answer writes the revision last. An `<answer>` left open (a truncated completion) counts for
    nothing. Whitespace around the text inside the tags is layout, like the whitespace the
    format allows between blocks, so it is dropped; the verifier judges the spelling inside.
    """
    found = _ANSWER.findall(completion)
    return found[-1].strip() if found else None


def format_verdict(completion: str) -> Verdict:
    """R1 format: exactly one think block, then exactly one answer block, nothing around them.

    Precisely: the four tags `<think>`, `</think>`, `<answer>`, `</answer>` each occur exactly
    once and in that order, and outside the two blocks there is only whitespace (before, between,
    after). So a second think or answer block, a tag inside a block (an answer inside the think
    block), or text between or after the blocks is `bad_format`. The think block may be empty
    (a one-number question has no step); the answer block may not (`empty_answer`).
    """
    if _TAGS.findall(completion) != _R1_TAGS:
        return Verdict("reject", "bad_format")
    m = _FORMAT.fullmatch(completion)
    if not m:
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
    completions: list[str], judge_verdict: list[Verdict] | None = None, **_: object
) -> list[Verdict]:
    """The generative judge's verdicts (see `tasks.judge`), precomputed by the caller.

    A reward never starts a model: the stage runs the judge worker over the whole pool in one
    batched call (`tasks.judge_run.judge_candidates`) and passes its votes as the
    `judge_verdict` column, one per completion.
    """
    if judge_verdict is None:
        raise ValueError(
            "the `judge` reward needs the judge's votes as the `judge_verdict` column (run "
            "tasks.judge_run.judge_candidates first); in curation, list `judge` in "
            "curation.rewards and set `judge:`"
        )
    if len(judge_verdict) != len(completions):
        raise ValueError(
            f"judge_verdict has {len(judge_verdict)} rows for {len(completions)} completions"
        )
    return list(judge_verdict)


def judge_reward(prompts: list[str], completions: list[str], **kw) -> list[float | None]:
    return [verdict_score(v) for v in judge_verdicts(completions, **kw)]


def _rm_score(completions: list[str], rm_score: list[float] | None) -> list[float]:
    """The reward model's P(accept) per completion, as the caller computed it."""
    if rm_score is None:
        raise ValueError(
            "the `rm` reward needs the reward model's P(accept) as the `rm_score` column (run "
            "tasks.reward_model.rm_scores first); in curation, list `rm` in curation.rewards "
            "and set curation.reward_model"
        )
    if len(rm_score) != len(completions):
        raise ValueError(f"rm_score has {len(rm_score)} rows for {len(completions)} completions")
    return [float(p) for p in rm_score]


def rm_verdicts(
    completions: list[str], rm_score: list[float] | None = None, **_: object
) -> list[Verdict]:
    """The scalar reward model's verdicts: accept when P(accept) >= 0.5 (`flywheel train-rm`).

    Scores come precomputed (`rm_score`): the stage runs the model in its worker process.
    """
    return [
        Verdict("accept" if p >= 0.5 else "reject", f"rm_p={p:.2f}")
        for p in _rm_score(completions, rm_score)
    ]


def rm_reward(
    prompts: list[str], completions: list[str], rm_score: list[float] | None = None, **_: object
) -> list[float | None]:
    """The reward model's P(accept) itself: a graded reward."""
    return _rm_score(completions, rm_score)


# -- language consistency ------------------------------------------------------------------------
_THINK = re.compile(r"<think>(.*?)(?:</think>|$)", re.S)
# Japanese writes Han and kana together: one script for the purpose of mixing.
_SCRIPT_ALIASES = {"CJK": "HAN", "HIRAGANA": "HAN", "KATAKANA": "HAN"}
LANGUAGE_TOLERANCE = 0.95  # curation accepts a CoT with at least this share in the target script


def cot_text(completion: str) -> str:
    """The chain of thought: the think block's text, or the whole completion without tags."""
    m = _THINK.search(completion)
    return m.group(1) if m else _TAGS.sub("", completion)


def script_of(ch: str) -> str | None:
    """Unicode script of a letter (`LATIN`, `CYRILLIC`, `HAN`, ...); None for non-letters."""
    if not ch.isalpha():
        return None
    word = unicodedata.name(ch, "UNKNOWN").split(" ")[0]
    return _SCRIPT_ALIASES.get(word, word)


def dominant_script(text: str) -> str | None:
    counts = Counter(s for s in map(script_of, text) if s is not None)
    return counts.most_common(1)[0][0] if counts else None


def language_score(prompt: str, completion: str) -> float:
    """Share of the CoT's letters written in the prompt's script (1.0 for a CoT without letters)."""
    scripts = [s for s in map(script_of, cot_text(completion)) if s is not None]
    if not scripts:
        return 1.0
    target = dominant_script(prompt) or Counter(scripts).most_common(1)[0][0]
    return sum(s == target for s in scripts) / len(scripts)


def language_reward(
    prompts: list[str] | None, completions: list[str], question: list[str] | None = None, **_
) -> list[float | None]:
    sources = question if question is not None else prompts
    if sources is None:
        raise ValueError("language reward needs `prompts` or a `question` column")
    return [language_score(p, c) for p, c in zip(sources, completions, strict=True)]


def language_verdicts(completions: list[str], prompts: list[str] | None = None, **kw):
    scores = language_reward(prompts, completions, **kw)
    return _threshold(scores, LANGUAGE_TOLERANCE, "one_script", "language_mixing")


# -- length ---------------------------------------------------------------------------------------
LENGTH_LIMIT = 512
LENGTH_BUFFER = 128


def length_penalty(length: int, limit: int, buffer: int) -> float:
    """DAPO's soft overlong penalty: 0 up to `limit - buffer`, then linear down to -1 at `limit`."""
    if length <= limit - buffer:
        return 0.0
    if length >= limit:
        return -1.0
    return (limit - buffer - length) / buffer


def completion_lengths(completions: list[str], **kw) -> list[int]:
    """Tokens when the caller knows them (`num_tokens`, TRL's `completion_ids`), else characters."""
    if kw.get("num_tokens") is not None:
        return [int(n) for n in kw["num_tokens"]]
    if kw.get("completion_ids") is not None:
        return [len(ids) for ids in kw["completion_ids"]]
    return [len(c) for c in completions]


def length_reward(
    prompts: list[str] | None,
    completions: list[str],
    length_limit: int = LENGTH_LIMIT,
    length_buffer: int = LENGTH_BUFFER,
    **kw,
) -> list[float | None]:
    if not 0 < length_buffer <= length_limit:
        raise ValueError(f"length_buffer must be in 1..length_limit, got {length_buffer}")
    lengths = completion_lengths(completions, **kw)
    return [length_penalty(n, length_limit, length_buffer) for n in lengths]


def length_verdicts(completions: list[str], prompts: list[str] | None = None, **kw):
    return _threshold(length_reward(prompts, completions, **kw), 0.0, "within_limit", "overlong")


# -- repetition -----------------------------------------------------------------------------------
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af"
_WORD = re.compile(f"[{_CJK}]|[^\\W{_CJK}]+|[^\\w\\s]")
REPETITION_NGRAM = 3
REPETITION_TOLERANCE = 0.2  # curation rejects a completion with more repeated n-grams than this


def repetition_penalty(text: str, n: int = REPETITION_NGRAM) -> float:
    """Minus the share of the text's word n-grams that repeat an earlier one (0 = none repeat)."""
    words = _WORD.findall(_TAGS.sub(" ", text))  # the format's own tags are not repetition
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    return -(1.0 - len(set(grams)) / len(grams))


def repetition_reward(
    prompts: list[str] | None, completions: list[str], ngram: int = REPETITION_NGRAM, **_
) -> list[float | None]:
    if ngram < 1:
        raise ValueError(f"ngram must be at least 1, got {ngram}")
    return [repetition_penalty(c, ngram) for c in completions]


def repetition_verdicts(completions: list[str], prompts: list[str] | None = None, **kw):
    scores = repetition_reward(prompts, completions, **kw)
    return _threshold(scores, -REPETITION_TOLERANCE, "not_repetitive", "repetitive")


# -- self-consistency -----------------------------------------------------------------------------
def _same(domain: str, a: str, b: str) -> bool:
    """Whether the domain's verifier accepts `a` against `b` as gold (a crash is no match)."""
    try:
        return DOMAINS[domain].verify(a, b).outcome == "accept"
    except Exception:
        return False


def majority_answer(answers: Sequence[str | None], domain: str, min_votes: int = 1) -> str | None:
    """The answer most samples agree on, by the domain's verifier; None without a clear winner.

    The one vote of the project (maj@k in `tasks.metrics`, the self-consistency pseudo-label).
    A vote is an answer the verifier accepts against itself: a missing or unparsable answer,
    or an arith spelling it rejects as `non_canonical` (`007`), is no vote. Votes are grouped
    by the verifier, not by their text, so math `0.5` and `1/2` are one answer. The largest
    group wins only when no other group is as large (a tie for the top is no majority) and it
    holds at least `min_votes` votes. The winner is returned as its first voter wrote it.
    """
    clusters: list[list[str]] = []
    for a in answers:
        if a is None or not _same(domain, a, a):
            continue
        for cluster in clusters:
            if _same(domain, a, cluster[0]):
                cluster.append(a)
                break
        else:
            clusters.append([a])
    sizes = sorted((len(c) for c in clusters), reverse=True)
    if not sizes or sizes[0] < min_votes or (len(sizes) > 1 and sizes[0] == sizes[1]):
        return None
    return next(c[0] for c in clusters if len(c) == sizes[0])


def self_consistency_verdicts(
    completions: list[str],
    prompts: list[str] | None = None,
    answer: list[str | None] | None = None,
    domain: list[str] | str = "arith",
    **_,
) -> list[Verdict]:
    if prompts is None:
        raise ValueError("self_consistency needs `prompts` to group samples")
    n = len(completions)
    answers = answer if answer is not None else [None] * n
    domains = [domain] * n if isinstance(domain, str) else domain
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(p, []).append(i)
    labels: list[str | None] = list(answers)
    for idx in groups.values():
        if any(answers[i] is None for i in idx):
            group_answers = [extract_answer(completions[i]) for i in idx]
            voted = majority_answer(group_answers, domains[idx[0]], min_votes=2)
            for i in idx:
                labels[i] = answers[i] if answers[i] is not None else voted
    out = []
    for c, gold, label, d in zip(completions, answers, labels, domains, strict=True):
        if label is None:
            out.append(Verdict("infra_error", "no_majority"))
            continue
        v = accuracy_verdict(c, label, d)
        out.append(v if gold is not None else Verdict(v.outcome, f"majority_{v.reason}"))
    return out


def self_consistency_reward(prompts, completions, **kw) -> list[float | None]:
    return [verdict_score(v) for v in self_consistency_verdicts(completions, prompts, **kw)]


def _threshold(scores: list[float | None], at_least: float, ok: str, bad: str) -> list[Verdict]:
    return [
        Verdict("infra_error", "not_computed")
        if s is None
        else Verdict("accept", ok)
        if s >= at_least
        else Verdict("reject", bad)
        for s in scores
    ]


Reward = Callable[..., list[float | None]]

# name -> (reward function with TRL's signature, the verdicts behind it)
REWARDS: dict[str, tuple[Reward, Callable[..., list[Verdict]]]] = {
    "accuracy": (accuracy_reward, accuracy_verdicts),
    "format": (format_reward, format_verdicts),
    "judge": (judge_reward, judge_verdicts),
    "rm": (rm_reward, rm_verdicts),
    "language": (language_reward, language_verdicts),
    "length": (length_reward, length_verdicts),
    "repetition": (repetition_reward, repetition_verdicts),
    "self_consistency": (self_consistency_reward, self_consistency_verdicts),
}


def bound_reward(name: str, **params: object) -> Reward:
    """`REWARDS[name]`'s function with `params` fixed, named `name` (TRL logs rewards by name)."""
    if name not in REWARDS:
        raise ValueError(f"unknown reward {name!r}; known: {sorted(REWARDS)}")
    fn = REWARDS[name][0]

    def reward(prompts, completions, **columns):
        return fn(prompts, completions, **{**columns, **params})

    reward.__name__ = reward.__qualname__ = name
    return reward
