"""Answer spellings the verifiers accept: canonical ASCII forms only, any length, no crash."""

import pytest

from tasks.domains import arith
from tasks.domains import math as math_domain
from tasks.rewards import accuracy_verdict

HUGE = "9" * 5000  # past Python's 4300-digit limit for int(str)


def _completion(answer: str) -> str:
    return f"<think>t</think><answer>{answer}</answer>"


@pytest.mark.parametrize(
    "answer,gold,outcome,reason",
    [
        ("7", "7", "accept", "correct"),
        ("-7", "-7", "accept", "correct"),
        ("0", "0", "accept", "correct"),
        ("10", "10", "accept", "correct"),
        ("007", "7", "reject", "non_canonical"),
        ("00", "0", "reject", "non_canonical"),
        ("-0", "0", "reject", "non_canonical"),
        ("+7", "7", "reject", "non_canonical"),
        (" 7", "7", "reject", "non_canonical"),
        ("7 ", "7", "reject", "non_canonical"),
        ("7\n", "7", "reject", "non_canonical"),
        ("7.0", "7", "reject", "non_canonical"),
        ("7.", "7", "reject", "non_canonical"),
        ("１２", "12", "reject", "non_canonical"),  # full-width
        ("١٢", "12", "reject", "non_canonical"),  # Arabic-Indic
        ("-١٢", "-12", "reject", "non_canonical"),
        ("1٢", "12", "reject", "non_canonical"),  # one stray digit is enough
        ("٠", "0", "reject", "non_canonical"),
        ("²", "2", "reject", "unparsable_answer"),  # int() refuses it too
        ("7x", "7", "reject", "unparsable_answer"),
        ("--7", "-7", "reject", "unparsable_answer"),
        ("-", "0", "reject", "unparsable_answer"),
        (HUGE, HUGE, "accept", "correct"),
        (HUGE, "9", "reject", "wrong"),
        ("9", HUGE, "reject", "wrong"),
        ("-" + HUGE, HUGE, "reject", "wrong"),
        ("0" + HUGE, HUGE, "reject", "non_canonical"),
        ("7", "07", "infra_error", "non_canonical_gold"),
        ("7", "７", "infra_error", "non_canonical_gold"),
    ],
)
def test_arith_verify_accepts_only_the_spelling_str_int_writes(answer, gold, outcome, reason):
    assert arith.verify(answer, gold) == arith.Verdict(outcome, reason)


@pytest.mark.parametrize("value", [0, 7, -7, 10, -4300, 12345678901234567890, -(10**40)])
def test_arith_canonical_is_str_of_int(value):
    assert arith.is_canonical(str(value))
    assert arith.verify(str(value), str(value)).outcome == "accept"


def test_huge_answer_is_a_clean_reject_through_the_reward():
    # A model that writes a 5000-digit number made a wrong answer, not an infrastructure failure.
    v = accuracy_verdict(_completion(HUGE), "26", "arith")
    assert (v.outcome, v.reason) == ("reject", "wrong")
    v = accuracy_verdict(_completion("-" + HUGE + "0"), "26", "arith")
    assert (v.outcome, v.reason) == ("reject", "wrong")


@pytest.mark.parametrize("expr", ["１+2", "1+٢", "١٢-3"])
def test_arith_questions_take_ascii_digits_only(expr):
    with pytest.raises(arith.ParseError):
        arith.evaluate(expr)


@pytest.mark.parametrize("text", ["１+2", "1+٢", "١٢-3+4"])
def test_arith_proposed_problems_take_ascii_digits_only(text):
    assert arith.read_problem(text) is None


@pytest.mark.parametrize(
    "answer,gold,outcome,reason",
    [
        ("1/2", "1/2", "accept", "correct"),
        ("0.5", "1/2", "accept", "correct"),
        # math-verify reads `2^{２}` as `2`: the non-ASCII digit must not pass unseen.
        ("2^{２}", "2", "reject", "non_ascii_digits"),
        ("3^{٣}", "3", "reject", "non_ascii_digits"),
        ("\\frac{1}{2}^{２}", "1/2", "reject", "non_ascii_digits"),
        ("１/２", "1/2", "reject", "non_ascii_digits"),
        ("١/٢", "1/2", "reject", "non_ascii_digits"),
        ("2²", "4", "reject", "non_ascii_digits"),
        ("\\text{１}", "\\text{１}", "infra_error", "non_ascii_digits_gold"),  # exact copy too
        ("1/2", "１/２", "infra_error", "non_ascii_digits_gold"),
    ],
)
def test_math_verify_rejects_non_ascii_digits(answer, gold, outcome, reason):
    assert math_domain.verify(answer, gold) == math_domain.Verdict(outcome, reason)


@pytest.mark.parametrize("text", ["１/2+1/3", "1/2+1/٣"])
def test_math_proposed_problems_take_ascii_digits_only(text):
    assert math_domain.read_problem(text) is None
