"""The generative judge's decision logic: rubric, prompt, verdict parser, k-vote, combination.

Pure: no torch, vLLM, Prefect or MLflow here. Running a judge model over candidates is the
worker's job (`tasks.judge_run`), which calls these functions on both sides of one engine call.

A judge = a versioned rubric file (`configs/judges/<name>_v<N>.txt`) + a generation backend +
the strict parser + a k-vote. How it departs from the usual "ask a model, regex the answer":

- The candidate is untrusted text inside the judge's prompt. It is wrapped between delimiters
  that carry a per-call random nonce, anything in it that imitates a delimiter or a verdict line
  is escaped, control and format characters are dropped and its length is capped, so a
  candidate cannot close its own block early or hand the judge a ready-made verdict.
  Imitations are matched on a folded view of the text (Unicode compatibility folding, a table
  of Cyrillic/Greek look-alikes, invisible characters dropped, any non-letters between the
  letters), so `ＶＥＲＤＩＣＴ`, `VЕRDІСТ` or `V_E_R_D_I_C_T` count as `VERDICT`. The question
  (a seed file's text) is escaped the same way, and the template is filled in one pass.
- The cap is what the judge can read: 160 characters for the embedded judge, else derived from
  the judge's context (`candidate_char_limit`); how many candidates it cut is a QC figure.
- The parser accepts exactly one verdict line, last, in the rubric's declared form (a score is
  a plain ASCII integer). A missing verdict, two verdicts, a verdict followed by more text, an
  unknown label, a score out of range or in another form (`07`, `+7`, `７`, `7.5`) or an empty
  output is a `judge_error`; nothing is coerced into accept or reject.
- Rules and judge combine so that every rule that can apply does (`combine`): the judge takes
  the place of the answer check at most, never of the format, truncation or length rules.
- Votes: k samples per candidate, majority of the valid votes decides, the margin is kept. A
  tie, or more judge errors than the tolerated share, is an `infra_error`: a judge that could
  not decide says nothing about the candidate, so it is never counted as a reject.
"""

from __future__ import annotations

import functools
import random
import re
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tasks.judge_qc import qc_metrics as qc_metrics  # re-exported: the QC lives in judge_qc
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
# Letters that render as nothing or as a blank yet count as word characters (Hangul fillers):
# dropped like format characters, so they cannot split a word the matcher looks for.
_INVISIBLE = frozenset("\u115f\u1160\u3164\uffa0")
# Look-alikes of Latin letters that Unicode's compatibility folding (NFKC) leaves alone: the
# Cyrillic and Greek letters that render like Latin ones, and the Latin small capitals. Only
# the matcher sees the folded text; the judge sees the candidate's own characters.
_CONFUSABLES = str.maketrans(
    {
        # Cyrillic
        **dict(zip("АВСЕНІЈКМОРЅТХУҮԀԁԛԜԝѴѵӀӏ", "ABCEHIJKMOPSTXYYDdqWwVvIl", strict=True)),
        **dict(zip("аеорсхуіјѕһткмнв", "aeopcxyijshtkmhb", strict=True)),
        # Greek
        **dict(zip("ΑΒΕΖΗΙΚΜΝΟΡΤΥΧϹ", "ABEZHIKMNOPTYXC", strict=True)),
        **dict(zip("ϲϳαικνορτυχ", "cjaikvoptux", strict=True)),
        # Latin small capitals and the dotless i
        **dict(zip("ᴀʙᴄᴅᴇɢʜɪᴊᴋʟᴍɴᴏᴘʀꜱᴛᴜᴠᴡʏᴢı", "ABCDEGHIJKLMNOPRSTUVWYZi", strict=True)),
    }
)
# Anything that reads as a delimiter or a verdict, however spaced, cased or punctuated: any run
# of non-letters (spaces, dots, underscores, ...) may sit between the letters.
_IMITATIONS = "|".join(r"[\W_]*".join(word) for word in (DELIMITER_WORD, VERDICT_KEY))


class _FormatTable(dict):
    """For `str.translate`: None (drop) for format characters, else the character itself."""

    def __missing__(self, code: int) -> int | None:
        self[code] = kept = None if unicodedata.category(chr(code)) == "Cf" else code
        return kept


_FORMAT_TABLE = _FormatTable()


def _visible(text: str) -> str:
    """The text without control and format (zero-width, bidi, tag) characters, which carry
    nothing a judge should read: what the length cap measures and the judge sees."""
    text = _CONTROL.sub("", text)
    return text if text.isascii() else text.translate(_FORMAT_TABLE)


@functools.lru_cache(maxsize=65536)
def _fold(ch: str) -> str:
    """What one character reads as to the matcher: compatibility-folded (full-width, math and
    circled letters become plain ones; NFKD, so accents come off as separate marks that are
    then dropped), look-alikes mapped to Latin, and invisible characters dropped."""
    if ch in _INVISIBLE or unicodedata.category(ch) == "Cf":
        return ""
    # The table goes first too: NFKD maps some look-alikes elsewhere (lunate sigma `Ϲ` -> `Σ`).
    base = unicodedata.normalize("NFKD", ch.translate(_CONFUSABLES))
    return "".join(c for c in base if not unicodedata.combining(c)).translate(_CONFUSABLES)


class _FoldTable(dict):
    """`_fold` per code point, for `str.translate` (filled on first sight of a character)."""

    def __missing__(self, code: int) -> str:
        self[code] = folded = _fold(chr(code))
        return folded


_FOLD_TABLE = _FoldTable()


def _matching_view(text: str) -> tuple[str, list[int] | range]:
    """The folded text, and for each of its characters the index of the original it came from."""
    if text.isascii():  # every character reads as itself
        return text, range(len(text))
    view: list[str] = []
    origin: list[int] = []
    for i, ch in enumerate(text):
        folded = _FOLD_TABLE[ord(ch)]
        view.append(folded)
        origin.extend([i] * len(folded))
    return "".join(view), origin


def neutralize(text: str, nonce: str) -> str:
    """Untrusted text (a candidate, a seed file's question) as it may appear in a judge prompt:
    control and format characters dropped, and every imitation of a delimiter, a verdict line or
    the nonce escaped. Imitations are found on the folded view (`_fold`), so full-width,
    Cyrillic/Greek look-alike and letter-by-letter separated spellings are caught too; the span
    of original characters behind each match is what gets replaced."""
    return _escape(_visible(text), nonce)


def _escape(text: str, nonce: str) -> str:
    """`neutralize` of text already without control and format characters."""
    pattern = re.compile(f"{_IMITATIONS}|{re.escape(nonce)}", re.IGNORECASE)
    # Most text holds no imitation: one C-speed pass finds that out before any index mapping.
    if not pattern.search(text if text.isascii() else text.translate(_FOLD_TABLE)):
        return text
    view, origin = _matching_view(text)
    out, last = [], 0
    for m in pattern.finditer(view):
        start, end = origin[m.start()], origin[m.end() - 1] + 1
        start, end = max(start, last), max(end, last)  # two matches in one expanded character
        out.append(text[last:start] + ESCAPED)
        last = end
    out.append(text[last:])
    return "".join(out)


def is_cut(candidate: str, max_chars: int) -> bool:
    """Whether `sanitize` cuts this candidate (counted in the judge's QC figures)."""
    return len(_visible(candidate)) > max_chars


def sanitize(candidate: str, nonce: str, max_chars: int) -> str:
    """The candidate as it may appear inside the block: imitations escaped, length capped.

    The cap applies first, so padding cannot push an escape out of view, and the truncation
    mark tells the judge (and a reader) that the text was cut.
    """
    text = _visible(candidate)
    cut = len(text) > max_chars
    text = _escape(text[:max_chars], nonce)
    return text + TRUNCATION_MARK if cut else text


def wrap(candidate: str, nonce: str, max_chars: int) -> str:
    return (
        f"{DELIMITER_WORD} {nonce} BEGIN\n"
        f"{sanitize(candidate, nonce, max_chars)}\n"
        f"{DELIMITER_WORD} {nonce} END\n"
    )


_FIELDS = re.compile(r"\{question\}|\{candidate\}")


def render(rubric: Rubric, question: str, candidate: str, nonce: str, max_chars: int) -> str:
    """The judge prompt of one candidate.

    The question is untrusted too (a seed file's text): it is neutralized like the candidate,
    without the length cap (the seed file's own limit applies). The template's two fields are
    filled in one pass, so a `{candidate}` inside the question, or a `{question}` inside the
    candidate, stays literal text.
    """
    values = {
        "{question}": neutralize(question, nonce),
        "{candidate}": wrap(candidate, nonce, max_chars),
    }
    return _FIELDS.sub(lambda m: values[m.group()], rubric.template)


# ---------------------------------------------------------------------------------------------
# How much of a candidate the judge sees

EMBEDDED_CANDIDATE_CHARS = 160  # what the tiny embedded judge is trained and measured on
# Characters per token assumed when the cap is derived from a judge's context. Tokenizers of
# real models give about 4 for English prose but 1-3 for digits, symbols and code, which fill
# reasoning traces; 2 keeps a derived cap inside the context for such text.
CHARS_PER_TOKEN = 2


def candidate_char_limit(
    setting: int | None, *, embedded: bool, max_model_len: int, max_tokens: int, template: str
) -> int:
    """The candidate cut (characters): `setting` when given; else 160 for the embedded judge;
    else what the judge's context leaves: `max_model_len` minus `max_tokens` (its output)
    minus the rubric template and the block's delimiter lines (counted one token per character,
    an upper bound for ASCII text), times `CHARS_PER_TOKEN`. The question shares that room, so
    a long question can still crowd out the candidate's end."""
    if setting is not None:
        return setting
    if embedded:
        return EMBEDDED_CANDIDATE_CHARS
    overhead = len(_FIELDS.sub("", template)) + len(wrap("", "x" * 6, 0))
    room = max_model_len - max_tokens - overhead
    if room <= 0:
        raise ValueError(
            f"judge.max_model_len ({max_model_len}) leaves no room for a candidate after "
            f"judge.max_tokens ({max_tokens}) and the rubric ({overhead} characters): raise "
            "judge.max_model_len or set judge.max_candidate_chars"
        )
    return room * CHARS_PER_TOKEN


def cut_counts(candidates: list[str], max_chars: int) -> dict[str, float]:
    """How many candidates the judge saw cut, and their share (judge QC figures)."""
    cut = sum(is_cut(c, max_chars) for c in candidates)
    return {"cut": float(cut), "cut_share": cut / len(candidates) if candidates else 0.0}


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


_SCORE_FORM = re.compile(r"0|-?[1-9][0-9]*")


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
    # Plain integers only: ASCII digits, no leading zero, no plus sign (`7`; not `07`, `+7`,
    # `７`, `7.5`, `7/10`). `int()` alone would take several of those, and each is a judge
    # that did not write the rubric's form.
    if not _SCORE_FORM.fullmatch(value):
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


class JudgeInfraErrors(RuntimeError):
    """Too many of a generation's judge votes are infra_error for the rest to be trusted."""


def infra_error_share(votes: list[JudgeVote], limit: float) -> float:
    """The share of `votes` that are infra_error; `JudgeInfraErrors` when it is above `limit`.

    Samples with an infra_error vote are neither accepted nor rejected, so a judge endpoint
    that fails on a share of them (a timeout, HTTP 5xx or 429 past the retries, a garbled
    reply) silently narrows the accepted set to what it could read: past the limit, stop."""
    bad = [v.reason for v in votes if v.outcome == "infra_error"]
    share = len(bad) / len(votes) if votes else 0.0
    if share > limit:
        reasons = ", ".join(f"{r} {n}" for r, n in Counter(bad).most_common(5))
        raise JudgeInfraErrors(
            f"judge: {len(bad)} of {len(votes)} votes ({share:.1%}) are infra_error ({reasons}),"
            f" above judge.max_infra_error_share {limit:g}. Check the judge endpoint or model "
            "and rerun: the stages before curate are kept."
        )
    return share


# ---------------------------------------------------------------------------------------------
# Combining rules and judge


def _rules_then_judge(rules: Verdict | None, judge: Verdict) -> Verdict:
    """Rules where the domain can check the answer; the judge for the rest."""
    return judge if rules is None else rules


def _both(rules: Verdict | None, judge: Verdict) -> Verdict:
    """Both must accept: a reject from either stands (the sample cannot pass whatever the other
    says); else an infra_error from either is one (never a reject); no rule = judge alone."""
    if rules is None:
        return judge
    for outcome in ("reject", "infra_error"):
        for v in (rules, judge):
            if v.outcome == outcome:
                return v
    return Verdict("accept", "rules_and_judge_accept")


def _judge_only(rules: Verdict | None, judge: Verdict) -> Verdict:
    return judge


# How the rules' verdict on the *answer* and the judge's combine, by `judge.combine`.
COMBINE: dict[str, Callable[[Verdict | None, Verdict], Verdict]] = {
    "rules_then_judge": _rules_then_judge,
    "both": _both,
    "judge_only": _judge_only,
}


def combine(mode: str, checks: Verdict, answer: Verdict | None, judge: Verdict) -> Verdict:
    """A sample's verdict from the rules and the judge.

    `checks` is the joint verdict of every rule that does not check the answer (format,
    truncation, length, repetition, ...): those apply to every sample, so their reject stands
    whatever the judge says, and their infra_error stands unless something rejects. `answer` is
    the rules' verdict on the answer, None where they cannot give one (no gold answer); it and
    the judge's combine by `COMBINE[mode]`, so under `judge_only` the judge takes the answer
    check's place and nothing else's.
    """
    if checks.outcome == "reject":
        return checks
    decided = COMBINE[mode](answer, judge)
    if checks.outcome == "infra_error" and decided.outcome != "reject":
        return checks
    return decided
