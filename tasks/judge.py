"""The generative judge's decision logic: rubric, prompt, verdict parser, k-vote, combination.

Pure: no torch, vLLM, Prefect or MLflow here. Running a judge model over candidates is the
worker's job (`tasks.judge_run`), which calls these functions on both sides of one engine call.

A judge = a versioned rubric file (`configs/judges/<name>_v<N>.txt`) + a generation backend +
the strict parser + a k-vote. How it departs from the usual "ask a model, regex the answer":

- The candidate is untrusted text inside the judge's prompt. It is wrapped between delimiters
  that carry a per-call random nonce, anything in it that imitates a delimiter or a verdict line
  is escaped, control characters are dropped and its length is capped, so a candidate cannot
  close its own block early or hand the judge a ready-made verdict.
- The parser accepts exactly one verdict line, last, in the rubric's declared form. A missing
  verdict, two verdicts, a verdict followed by more text, an unknown label, a score out of
  range or an empty output is a `judge_error`; nothing is coerced into accept or reject.
- Votes: k samples per candidate, majority of the valid votes decides, the margin is kept. A
  tie, or more judge errors than the tolerated share, is an `infra_error`: a judge that could
  not decide says nothing about the candidate, so it is never counted as a reject.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tasks.records import Verdict, stable_hash

JUDGES_DIR = Path(__file__).resolve().parent.parent / "configs" / "judges"
VERDICT_KEY = "VERDICT"
DELIMITER_WORD = "CANDIDATE"
TRUNCATION_MARK = " (cut)"
ESCAPED = "(removed)"
NONCE_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


# ---------------------------------------------------------------------------------------------
# Rubrics


@dataclass(frozen=True)
class Rubric:
    """A rubric template with its declared verdict form.

    `verdict` is `label` (`VERDICT: accept|reject`) or `score` (an integer in `min..max`,
    accepted at `accept_at` or above). `template` holds `{question}` and `{candidate}`.
    """

    name: str
    template: str
    verdict: Literal["label", "score"] = "label"
    min: int = 0
    max: int = 0
    accept_at: int = 0

    @property
    def version(self) -> str:
        """Content hash: two files with the same text are the same rubric."""
        return stable_hash(
            "rubric", self.template, self.verdict, self.min, self.max, self.accept_at
        )


class RubricError(ValueError):
    """A rubric file that cannot be used; the message names the file and the problem."""


def parse_rubric(text: str, name: str) -> Rubric:
    """Header (`key: value` lines, `#` comments) then `---` then the template."""
    head, sep, template = text.partition("\n---\n")
    if not sep:
        raise RubricError(f"{name}: no '---' line between the header and the template")
    meta: dict[str, str] = {}
    for raw in head.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, colon, value = line.partition(":")
        if not colon:
            raise RubricError(f"{name}: header line {raw!r} is not `key: value`")
        meta[key.strip()] = value.strip()
    unknown = set(meta) - {"verdict", "min", "max", "accept_at"}
    if unknown:
        raise RubricError(f"{name}: unknown header key(s) {sorted(unknown)}")
    for field in ("{question}", "{candidate}"):
        if field not in template:
            raise RubricError(f"{name}: the template must contain {field}")
    kind = meta.get("verdict", "label")
    if kind == "label":
        return Rubric(name, template)
    if kind != "score":
        raise RubricError(f"{name}: verdict must be `label` or `score`, got {kind!r}")
    try:
        lo, hi, at = (int(meta[k]) for k in ("min", "max", "accept_at"))
    except KeyError as e:
        raise RubricError(f"{name}: a score rubric declares min, max and accept_at ({e})") from None
    except ValueError as e:
        raise RubricError(f"{name}: min, max and accept_at must be integers ({e})") from None
    if not lo <= at <= hi or lo == hi:
        raise RubricError(f"{name}: need min <= accept_at <= max and min < max")
    return Rubric(name, template, "score", lo, hi, at)


def load_rubric(name_or_path: str | Path) -> Rubric:
    """A rubric by file path, or by name under `configs/judges/` (`arith_v1`)."""
    path = Path(name_or_path)
    if not path.is_file():
        path = JUDGES_DIR / f"{name_or_path}.txt"
    if not path.is_file():
        known = sorted(p.stem for p in JUDGES_DIR.glob("*.txt"))
        raise RubricError(f"judge rubric {name_or_path!r} not found; known: {known}")
    return parse_rubric(path.read_text(), path.stem)


# ---------------------------------------------------------------------------------------------
# Prompts


def make_nonce(rng: random.Random, length: int = 6) -> str:
    return "".join(rng.choice(NONCE_ALPHABET) for _ in range(length))


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# Anything that reads as a delimiter or a verdict, however spaced or cased.
_IMITATIONS = re.compile(
    "|".join(r"\W*".join(word) for word in (DELIMITER_WORD, VERDICT_KEY)), re.IGNORECASE
)


def sanitize(candidate: str, nonce: str, max_chars: int) -> str:
    """The candidate as it may appear inside the block: imitations escaped, length capped.

    The cap applies first, so padding cannot push an escape out of view, and the truncation
    mark tells the judge (and a reader) that the text was cut.
    """
    text = _CONTROL.sub("", candidate)
    cut = len(text) > max_chars
    text = text[:max_chars]
    text = _IMITATIONS.sub(ESCAPED, text)
    text = re.sub(re.escape(nonce), ESCAPED, text, flags=re.IGNORECASE)
    return text + TRUNCATION_MARK if cut else text


def wrap(candidate: str, nonce: str, max_chars: int) -> str:
    return (
        f"{DELIMITER_WORD} {nonce} BEGIN\n"
        f"{sanitize(candidate, nonce, max_chars)}\n"
        f"{DELIMITER_WORD} {nonce} END\n"
    )


def render(rubric: Rubric, question: str, candidate: str, nonce: str, max_chars: int) -> str:
    """The judge prompt of one candidate. `question` is trusted (it is the seed's)."""
    return rubric.template.replace("{question}", question).replace(
        "{candidate}", wrap(candidate, nonce, max_chars)
    )


def verdict_line(rubric: Rubric, accept: bool) -> str:
    """The verdict line a correct judge ends with (training targets of the embedded judge)."""
    if rubric.verdict == "label":
        return f"{VERDICT_KEY}: {'accept' if accept else 'reject'}"
    return f"{VERDICT_KEY}: {rubric.max if accept else rubric.min}"


# ---------------------------------------------------------------------------------------------
# Parser


@dataclass(frozen=True)
class JudgeOutput:
    """One judge sample, parsed: accept | reject | judge_error, why, and the score if any."""

    outcome: Literal["accept", "reject", "judge_error"]
    reason: str
    score: int | None = None


_VERDICT_LINE = re.compile(rf"^\s*{VERDICT_KEY}\s*:\s*(?P<value>.*?)\s*$")
_MENTION = re.compile(VERDICT_KEY, re.IGNORECASE)


def parse_verdict(text: str, rubric: Rubric, finish_reason: str = "stop") -> JudgeOutput:
    """Exactly one `VERDICT: <value>` line, the last non-empty line, in the declared form."""
    if finish_reason == "length":
        return JudgeOutput("judge_error", "truncated")
    if finish_reason == "error":  # the backend gave up on this prompt (HTTP failures)
        return JudgeOutput("judge_error", "backend_error")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return JudgeOutput("judge_error", "empty")
    mentions = sum(len(_MENTION.findall(ln)) for ln in lines)
    if mentions == 0:
        return JudgeOutput("judge_error", "missing_verdict")
    if mentions > 1:
        return JudgeOutput("judge_error", "multiple_verdicts")
    m = _VERDICT_LINE.match(lines[-1])
    if not m:
        return JudgeOutput("judge_error", "verdict_not_last")
    value = m["value"]
    if rubric.verdict == "label":
        if value in ("accept", "reject"):
            return JudgeOutput(value, "label")  # type: ignore[arg-type]
        return JudgeOutput("judge_error", "bad_label")
    if not re.fullmatch(r"[+-]?\d+", value):
        return JudgeOutput("judge_error", "not_a_score")
    score = int(value)
    if not rubric.min <= score <= rubric.max:
        return JudgeOutput("judge_error", "score_out_of_range", score)
    return JudgeOutput("accept" if score >= rubric.accept_at else "reject", "score", score)


# ---------------------------------------------------------------------------------------------
# Vote


@dataclass(frozen=True)
class JudgeVote:
    """The judge's verdict on one candidate after k samples. `margin` = |accepts - rejects| / k."""

    outcome: Literal["accept", "reject", "infra_error"]
    reason: str
    accepts: int
    rejects: int
    errors: int
    margin: float

    @property
    def verdict(self) -> Verdict:
        return Verdict(self.outcome, self.reason)


def vote(outputs: list[JudgeOutput], max_error_share: float = 0.5) -> JudgeVote:
    """Majority of the valid votes; a tie or errors above `max_error_share` is infra_error."""
    k = len(outputs)
    if k == 0:
        raise ValueError("vote needs at least one judge output")
    acc = sum(o.outcome == "accept" for o in outputs)
    rej = sum(o.outcome == "reject" for o in outputs)
    err = k - acc - rej
    margin = abs(acc - rej) / k
    if err > max_error_share * k or acc + rej == 0:
        reasons = sorted({o.reason for o in outputs if o.outcome == "judge_error"})
        return JudgeVote("infra_error", "judge_errors:" + ",".join(reasons), acc, rej, err, margin)
    if acc == rej:
        return JudgeVote("infra_error", "judge_tie", acc, rej, err, margin)
    outcome = "accept" if acc > rej else "reject"
    return JudgeVote(outcome, f"judge_{outcome}_{max(acc, rej)}of{k}", acc, rej, err, margin)


# ---------------------------------------------------------------------------------------------
# Combining rules and judge


def _rules_then_judge(rules: Verdict | None, judge: Verdict) -> Verdict:
    """Rules where the domain can check the answer; the judge for the rest."""
    return judge if rules is None else rules


def _both(rules: Verdict | None, judge: Verdict) -> Verdict:
    """Both must accept; any infra_error is one (never a reject); no rule = judge alone."""
    if rules is None:
        return judge
    for v in (rules, judge):
        if v.outcome == "infra_error":
            return v
    for v in (rules, judge):
        if v.outcome == "reject":
            return v
    return Verdict("accept", "rules_and_judge_accept")


def _judge_only(rules: Verdict | None, judge: Verdict) -> Verdict:
    return judge


COMBINE: dict[str, Callable[[Verdict | None, Verdict], Verdict]] = {
    "rules_then_judge": _rules_then_judge,
    "both": _both,
    "judge_only": _judge_only,
}


# ---------------------------------------------------------------------------------------------
# Quality control


def qc_metrics(votes: list[JudgeVote], rules: list[Verdict | None]) -> dict[str, float]:
    """Per-generation judge QC: errors, mean margin, agreement and confusion vs the rules.

    Agreement counts only candidates where both gave accept or reject (`rules` None or
    infra_error, or a judge infra_error, leaves a candidate out of the matrix).
    """
    n = len(votes)
    out: dict[str, float] = {
        "candidates": n,
        "votes": sum(v.accepts + v.rejects + v.errors for v in votes),
        "vote_errors": sum(v.errors for v in votes),
        "infra_errors": sum(v.outcome == "infra_error" for v in votes),
        "accepts": sum(v.outcome == "accept" for v in votes),
        "mean_margin": sum(v.margin for v in votes) / n if n else 0.0,
    }
    cells = {"both_accept": 0, "both_reject": 0, "judge_only_accept": 0, "rules_only_accept": 0}
    for v, r in zip(votes, rules, strict=True):
        if r is None or r.outcome == "infra_error" or v.outcome == "infra_error":
            continue
        j, ru = v.outcome == "accept", r.outcome == "accept"
        key = (
            "both_accept"
            if j and ru
            else "both_reject"
            if not j and not ru
            else "judge_only_accept"
            if j
            else "rules_only_accept"
        )
        cells[key] += 1
    compared = sum(cells.values())
    out.update({f"confusion.{k}": float(c) for k, c in cells.items()})
    out["compared"] = compared
    out["agreement"] = (
        (cells["both_accept"] + cells["both_reject"]) / compared if compared else float("nan")
    )
    return {k: float(v) for k, v in out.items()}
