"""`arith`: multi-step integer arithmetic, the built-in domain of the embedded demo.

A question is an expression such as `13-4+17`; the gold answer is its value; the reference
chain of thought evaluates it left to right, one operation per line:

    <think>13-4=9
    9+17=26</think><answer>26</answer>

Difficulty sets the number of operands and their size. Gold answers come from a small
recursive-descent parser (`+ - *` and parentheses; never `eval`). The verifier compares
canonical spellings as strings and never converts to `int`: Python refuses to convert integers
past 4300 digits, and a model may write one.

Only ASCII digits count as digits anywhere in this domain (questions, proposed problems,
answers): Python's `int()` and `str.isdigit()` also read full-width `１２` and Arabic-Indic
`١٢`, which the reference format never writes.
"""

from __future__ import annotations

import random
import re

from tasks.records import Seed, Verdict

# level -> (operands, largest operand + 1)
LEVELS: dict[int, tuple[int, int]] = {1: (2, 20), 2: (3, 20), 3: (4, 50), 4: (5, 100), 5: (6, 100)}
MAX_DIFFICULTY = max(LEVELS)

_TOKEN = re.compile(r"\s*([0-9]+|[-+*()])")  # [0-9], not \d: ASCII digits only


class ParseError(ValueError):
    pass


def _tokens(expr: str) -> list[str]:
    expr = expr.strip()
    out, pos = [], 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m:
            raise ParseError(f"unexpected character {expr[pos : pos + 1]!r} at {pos} in {expr!r}")
        out.append(m.group(1))
        pos = m.end()
        while pos < len(expr) and expr[pos].isspace():
            pos += 1
    if not out:
        raise ParseError("empty expression")
    return out


def evaluate(expr: str) -> int:
    """Value of an integer expression with + - * and parentheses (standard precedence)."""
    toks = _tokens(expr)
    pos = 0

    def peek() -> str | None:
        return toks[pos] if pos < len(toks) else None

    def take() -> str:
        nonlocal pos
        if pos >= len(toks):
            raise ParseError(f"expression ends early: {expr!r}")
        pos += 1
        return toks[pos - 1]

    def atom() -> int:
        t = take()
        if t == "(":
            v = sum_()
            if take() != ")":
                raise ParseError(f"missing ')' in {expr!r}")
            return v
        if t == "-":
            return -atom()
        if t.isdigit():
            return int(t)
        raise ParseError(f"unexpected {t!r} in {expr!r}")

    def product() -> int:
        v = atom()
        while peek() == "*":
            take()
            v *= atom()
        return v

    def sum_() -> int:
        v = product()
        while peek() in ("+", "-"):
            op = take()
            v = v + product() if op == "+" else v - product()
        return v

    value = sum_()
    if pos != len(toks):
        raise ParseError(f"trailing {toks[pos]!r} in {expr!r}")
    return value


def generate(rng: random.Random, difficulty: int) -> Seed:
    operands, bound = LEVELS[difficulty]
    nums = [rng.randrange(bound) for _ in range(operands)]
    ops = [rng.choice("+-") for _ in range(operands - 1)]
    question = str(nums[0]) + "".join(o + str(n) for o, n in zip(ops, nums[1:], strict=True))
    return Seed.make(question, str(evaluate(question)), difficulty)


def solution(question: str) -> str:
    """Reference completion: left-to-right steps in the R1 format (+/- chains only)."""
    toks = _tokens(question)
    if "*" in toks or "(" in toks:
        raise ValueError(f"no step-by-step solution for {question!r}: only +/- chains")
    acc, steps = int(toks[0]), []
    for op, num in zip(toks[1::2], toks[2::2], strict=True):
        new = acc + int(num) if op == "+" else acc - int(num)
        steps.append(f"{acc}{op}{num}={new}")
        acc = new
    return "<think>" + "\n".join(steps) + f"</think><answer>{acc}</answer>"


# The spelling `str(int)` writes: ASCII digits, no leading zeros, a `-` only before a non-zero.
_CANONICAL = re.compile(r"0|-?[1-9][0-9]*")
# What still reads as a number to a lenient parser (Unicode digits, signs, padding, `.0`).
_NUMBER_LIKE = re.compile(r"\s*[+-]?\d+(?:\.\d*)?\s*")


def is_canonical(text: str) -> bool:
    """Whether `text` is exactly what `str(int)` would write for some integer."""
    return _CANONICAL.fullmatch(text) is not None


def verify(answer: str, gold: str) -> Verdict:
    """Compare the model's final answer with the gold one, as canonical integer spellings.

    Only the spelling `str(int)` writes is accepted (`-?(0|[1-9][0-9]*)`, never `-0`): `007`,
    `-0`, `+7`, ` 7`, `7.0` and non-ASCII digits (`１２`, `١٢`) are rejected as `non_canonical`
    even where they denote the right value, so accepted training data never holds an answer
    form the reference solution would not write. Other text is `unparsable_answer`. Comparing
    strings needs no `int()`, so answers of any length are a plain `wrong` or `correct`.
    A gold answer that is not canonical is bad data: `infra_error`, not the model's fault.
    """
    if not is_canonical(gold):
        return Verdict("infra_error", "non_canonical_gold")
    if not is_canonical(answer):
        reason = "non_canonical" if _NUMBER_LIKE.fullmatch(answer) else "unparsable_answer"
        return Verdict("reject", reason)
    return Verdict("accept", "correct") if answer == gold else Verdict("reject", "wrong")


_PROBLEM = re.compile(r"[0-9]{1,3}(?:[+-][0-9]{1,3}){1,5}")


def read_problem(text: str, origin: str = "proposed") -> Seed | None:
    """A seed from model-written text, or None unless its answer can be computed.

    Only the generator's own grammar is kept (2 to 6 operands below 1000, `+`/`-`), so the
    reference solution and the verifier apply to it; the level follows the operand count.
    """
    q = re.sub(r"\s+", "", text)
    if not _PROBLEM.fullmatch(q):
        return None
    operands = len(_tokens(q)) // 2 + 1
    level = min(max(operands - 1, 1), MAX_DIFFICULTY)
    return Seed.make(q, str(evaluate(q)), level, origin)


def mutate(seed: Seed, rng: random.Random) -> Seed:
    """A harder variant of a seed: one more step, or (at the most steps) bigger numbers.

    Both raise the level by one where the levels allow, so a failure's variant stays near the
    model's edge instead of jumping to problems it cannot touch.
    """
    toks = _tokens(seed.question)
    nums, ops = [int(t) for t in toks[::2]], toks[1::2]
    level = min(seed.difficulty + 1, MAX_DIFFICULTY)
    bound = LEVELS[level][1]
    if len(nums) < LEVELS[MAX_DIFFICULTY][0]:
        ops.append(rng.choice("+-"))
        nums.append(rng.randrange(bound))
    else:
        nums = [min(n + rng.randrange(1, bound), 999) for n in nums]
    question = str(nums[0]) + "".join(o + str(n) for o, n in zip(ops, nums[1:], strict=True))
    return Seed.make(question, str(evaluate(question)), level, "mutations")
