"""Seed-file rows checked against their domain before any work: is this a problem the domain's
verifier can grade, with a gold answer it will accept?

A row that passes the schema can still be useless to a domain: a word problem in an `arith`
flywheel generates samples no rule can check, and the run only fails at training with no
accepted sample. Each check takes a row's question and gold answer (None: no gold) and returns
the reason the row is bad, or None. `SEED_CHECKS` is the registry, one entry per domain.

Departures from calling the verifier on the gold answer:
- `arith` re-computes the value and compares it with the gold answer as canonical decimal
  strings, so no `int()` ever runs on an untrusted string of unbounded length (Python refuses
  more than 4300 digits, and a product of long operands grows with the question). Operands, gold
  answers and values are capped at `MAX_DIGITS` digits, so the verifier's own `int(gold)` is safe.
- `math` accepts any question text (word problems are its use); only the gold answer must be
  one that math-verify parses, the same parse the verifier runs (else every sample of the row
  would end as `infra_error: unparsable_gold`).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from tasks.domains import arith
from tasks.domains import math as math_domain

MAX_DIGITS = 1000  # longest number in an arith seed: operand, gold answer or value
_VALUE_CAP = 10**MAX_DIGITS  # the smallest integer of MAX_DIGITS + 1 digits

SeedCheck = Callable[[str, str | None], str | None]

_ARITH_CHARS = re.compile(r"[0-9+\-*()\s]+")
_NOT_ARITH = re.compile(r"[^0-9+\-*()\s]")
_DIGIT_RUN = re.compile(r"[0-9]+")
_INTEGER = re.compile(r"\s*(-?)([0-9]+)\s*")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _show(text: str) -> str:
    """A short repr of untrusted text for an error message."""
    return repr(text) if len(text) <= 40 else repr(text[:37]) + "..."


def canonical_integer(text: str) -> str | None:
    """`text` as the decimal string of its integer (`' 007'` -> `'7'`, `'-0'` -> `'0'`), or None
    when it is not an optionally signed run of ASCII digits. Pure string work, any length."""
    m = _INTEGER.fullmatch(text)
    if m is None:
        return None
    digits = m[2].lstrip("0") or "0"
    return "-" + digits if m[1] and digits != "0" else digits


def check_arith(question: str, answer: str | None) -> str | None:
    """Why the row is not an `arith` problem with its value as gold answer, or None."""
    if not _ARITH_CHARS.fullmatch(question):
        bad = _NOT_ARITH.search(question)
        at = f": {bad[0]!r} at character {bad.start()}" if bad else ""
        return f"question is not an arith expression (digits, + - * and parentheses){at}"
    longest = max((len(run) for run in _DIGIT_RUN.findall(question)), default=0)
    if longest > MAX_DIGITS:
        return f"question has a {longest}-digit number, over the cap of {MAX_DIGITS} digits"
    try:
        value = arith.evaluate(question)
    except RecursionError:
        return "question nests parentheses or signs too deeply to evaluate"
    except ValueError as e:  # arith.ParseError
        return f"question is not an arith expression ({_clip(str(e), 120)})"
    if abs(value) >= _VALUE_CAP:
        return f"question's value has more than {MAX_DIGITS} digits"
    if answer is None:
        return None
    gold = canonical_integer(answer)
    if gold is None:
        return f"gold answer {_show(answer)} is not an integer"
    digits = len(answer.strip().lstrip("-"))
    if digits > MAX_DIGITS:
        return f"gold answer has {digits} digits, over the cap of {MAX_DIGITS}"
    computed = str(value)  # at most MAX_DIGITS digits: within Python's conversion limit
    if gold != computed:
        return f"gold answer {_show(answer)} differs from the question's value {computed}"
    return None


def check_math(question: str, answer: str | None) -> str | None:
    """Why the row's gold answer cannot be graded by the `math` verifier, or None."""
    if answer is None:
        return None
    if math_domain.parse_answer(answer) is None:
        return f"gold answer {_show(answer)} does not parse as math (math-verify finds no value)"
    return None


SEED_CHECKS: dict[str, SeedCheck] = {"arith": check_arith, "math": check_math}


def seed_check(domain: str) -> SeedCheck:
    """The check for `domain`; an unknown domain is a configuration error naming the choices."""
    try:
        return SEED_CHECKS[domain]
    except KeyError:
        raise ValueError(
            f"domain {domain!r} has no seed-file check; known: {sorted(SEED_CHECKS)}"
        ) from None
