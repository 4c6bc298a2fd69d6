"""`math`: answers checked by math-verify (symbolic equivalence), exact match first.

The verifier serves any seed file of math problems whose gold answers are LaTeX or plain
expressions (`\\frac{5}{6}`, `5/6`, `2\\sqrt{2}`, `\\{1,2\\}`). The built-in generator makes
fraction sums so the domain also runs from scratch (seeds, reference solutions, pretraining):

    <think>1/2+1/3=5/6
    5/6-1/4=7/12</think><answer>7/12</answer>

How it departs from the textbook `verify(parse(gold), parse(answer))`:
- Exact match is the fast path: when the stripped texts are equal, no sympy is run. It applies
  only once the gold answer is known to parse, so two copies of the same unparsable text never
  count as a correct answer.
- A gold answer that cannot be parsed is an `infra_error` (bad data, not a wrong model); a
  model answer that cannot be parsed is a `reject`.
- Bare text is parsed as LaTeX math (wrapped in `$…$`) before plain-expression parsing, so
  `2\\sqrt{2}` is not read as `2`; a parse that only yields the raw string counts as a failure.
- Only ASCII digits are digits: an answer holding any other character Python calls a digit
  (full-width `１`, Arabic-Indic `١`, superscript `²`) is rejected as `non_ascii_digits`, and
  such a gold answer is an `infra_error`. math-verify reads `2^{２}` as `2`, so without this
  check a stray non-ASCII digit could pass as a correct answer.
- math-verify's timeouts use `signal.alarm`, which only works on the main thread; elsewhere
  (a Prefect task thread) parsing runs without the timeout rather than failing.
"""

from __future__ import annotations

import random
import re
import threading
from fractions import Fraction
from functools import lru_cache

from tasks.records import Seed, Verdict

# level -> (terms, largest denominator)
LEVELS: dict[int, tuple[int, int]] = {1: (2, 4), 2: (2, 6), 3: (3, 6), 4: (3, 9), 5: (4, 12)}
MAX_DIFFICULTY = max(LEVELS)
TIMEOUT_S = 5


def fraction_text(x: Fraction) -> str:
    return str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"


def _terms(question: str) -> list[tuple[str, str]]:
    """`1/2+2/4` -> [('+', '1/2'), ('+', '2/4')]: signs and terms as written."""
    out, sign, pos = [], "+", 0
    for i, ch in enumerate(question + "+"):
        if ch in "+-" and i > pos:
            out.append((sign, question[pos:i]))
            sign, pos = ch, i + 1
    return out


def _fraction(term: str) -> Fraction:
    num, den = term.split("/")
    return Fraction(int(num), int(den))


def generate(rng: random.Random, difficulty: int) -> Seed:
    terms, max_den = LEVELS[difficulty]
    parts = []
    for k in range(terms):
        den = rng.randint(2, max_den)
        num = rng.randint(1, den - 1)
        sign = "" if k == 0 else rng.choice("+-")
        parts.append(f"{sign}{num}/{den}")
    question = "".join(parts)
    return Seed.make(question, fraction_text(_value(question)), difficulty)


def _value(question: str) -> Fraction:
    return sum((_fraction(t) * (1 if s == "+" else -1) for s, t in _terms(question)), Fraction(0))


def solution(question: str) -> str:
    """Reference completion: left-to-right sums, each reduced, in the R1 format."""
    terms = _terms(question)
    acc, shown, steps = _fraction(terms[0][1]), terms[0][1], []
    for sign, term in terms[1:]:
        acc = acc + _fraction(term) if sign == "+" else acc - _fraction(term)
        steps.append(f"{shown}{sign}{term}={fraction_text(acc)}")
        shown = fraction_text(acc)
    return "<think>" + "\n".join(steps) + f"</think><answer>{fraction_text(acc)}</answer>"


def _timeout() -> int | None:
    return TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


@lru_cache(maxsize=65536)
def parse_answer(text: str) -> tuple | None:
    """math-verify's parse of an answer text, or None when nothing mathematical is found."""
    from math_verify import parse  # imported lazily: sympy takes a second to load

    text = text.strip()
    if not text:
        return None
    candidates = [text] if "$" in text or "\\boxed" in text else [f"${text}$", text]
    for c in candidates:
        parsed = parse(c, parsing_timeout=_timeout())
        if parsed and not all(isinstance(p, str) for p in parsed):
            return tuple(parsed)
    return None


def has_non_ascii_digit(text: str) -> bool:
    """Whether `text` holds a character Python's `str.isdigit()` accepts beyond ASCII `0-9`."""
    return any(ch.isdigit() and not ch.isascii() for ch in text)


def verify(answer: str, gold: str) -> Verdict:
    if has_non_ascii_digit(gold):
        return Verdict("infra_error", "non_ascii_digits_gold")
    gold_parsed = parse_answer(gold)
    if gold_parsed is None:
        return Verdict("infra_error", "unparsable_gold")
    if has_non_ascii_digit(answer):
        return Verdict("reject", "non_ascii_digits")
    if answer.strip() == gold.strip():
        return Verdict("accept", "correct")
    predicted = parse_answer(answer)
    if predicted is None:
        return Verdict("reject", "unparsable_answer")
    from math_verify import verify as math_verify

    same = math_verify(list(gold_parsed), list(predicted), timeout_seconds=_timeout())
    return Verdict("accept", "correct") if same else Verdict("reject", "wrong")


_PROBLEM = re.compile(r"[0-9]{1,2}/[0-9]{1,2}(?:[+-][0-9]{1,2}/[0-9]{1,2}){1,3}")


def read_problem(text: str, origin: str = "proposed") -> Seed | None:
    """A seed from model-written text, or None unless it is a fraction sum of the generator's
    grammar (2 to 4 terms, non-zero denominators), whose answer this domain computes."""
    q = re.sub(r"\s+", "", text)
    if not _PROBLEM.fullmatch(q) or any(_fraction_or_none(t) is None for _, t in _terms(q)):
        return None
    terms = len(_terms(q))
    level = {2: 2, 3: 4}.get(terms, MAX_DIFFICULTY)
    return Seed.make(q, fraction_text(_value(q)), level, origin)


def _fraction_or_none(term: str) -> Fraction | None:
    num, den = term.split("/")
    return None if int(den) == 0 else Fraction(int(num), int(den))


def mutate(seed: Seed, rng: random.Random) -> Seed:
    """A harder variant: one more term (up to the top level's count) from the next level."""
    level = min(seed.difficulty + 1, MAX_DIFFICULTY)
    terms, max_den = LEVELS[level]
    q = seed.question
    if len(_terms(q)) < LEVELS[MAX_DIFFICULTY][0]:
        den = rng.randint(2, max_den)
        q += f"{rng.choice('+-')}{rng.randint(1, den - 1)}/{den}"
    else:
        return generate(rng, level)
    return Seed.make(q, fraction_text(_value(q)), level, "mutations")
