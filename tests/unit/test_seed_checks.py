"""Per-domain seed checks: a row the domain's verifier cannot grade is named before any work."""

import random

import pytest

from tasks.domains import DOMAINS, eval_suite
from tasks.domains.checks import (
    MAX_DIGITS,
    SEED_CHECKS,
    canonical_integer,
    check_arith,
    check_math,
    seed_check,
)

GSM8K = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
    "in May. How many clips did Natalia sell altogether in April and May?"
)


@pytest.mark.parametrize(
    "question,answer",
    [
        ("1+2", "3"),
        ("13-4+17", "26"),
        ("2*(3+4)", "14"),
        ("1 + 2 - 5", "-2"),
        ("-3+1", "-2"),
        ("7", "7"),
        ("1+2", " 003 "),  # the verifier compares integers: leading zeros are the same value
        ("5-5", "-0"),
        ("1+2", None),  # no gold: judge-only rows are allowed
        ("9" * MAX_DIGITS + "+0", "9" * MAX_DIGITS),  # at the cap
    ],
)
def test_arith_accepts_expressions_with_their_value(question, answer):
    assert check_arith(question, answer) is None


@pytest.mark.parametrize(
    "question,answer,reason",
    [
        (
            GSM8K,
            "72",
            "question is not an arith expression (digits, + - * and parentheses): "
            "'N' at character 0",
        ),
        ("What is 1+2?", "3", "question is not an arith expression (digits, + - * and "),
        ("1/2+1/3", "5/6", "'/' at character 1"),
        ("\u0661+\u0662", "3", "'\u0661' at character 0"),  # non-ASCII digits
        ("1+*2", "3", "question is not an arith expression ("),  # the parser's own words follow
        ("(1+2", "3", "question is not an arith expression ("),
        ("1 2", "3", "question is not an arith expression ("),
        ("1+2", "4", "gold answer '4' differs from the question's value 3"),
        ("10-4", "-6", "gold answer '-6' differs from the question's value 6"),
        ("1+2", "3.0", "gold answer '3.0' is not an integer"),
        ("1+2", "three", "gold answer 'three' is not an integer"),
        ("1+2", "\u0663", "gold answer '\u0663' is not an integer"),
        ("1+2", "", "gold answer '' is not an integer"),
        ("1+2", "9" * 5000, f"gold answer has 5000 digits, over the cap of {MAX_DIGITS}"),
        ("1+2", "0" * 5000 + "3", "gold answer has 5001 digits"),  # int() would refuse it too
        ("9" * 5000, None, f"question has a 5000-digit number, over the cap of {MAX_DIGITS}"),
        ("9" * 5000 + "+1", "1", "question has a 5000-digit number"),
        ("(" * 5000 + "1" + ")" * 5000, "1", "question nests parentheses or signs too deeply"),
        ("-" * 5000 + "1", "1", "question nests parentheses or signs too deeply"),
        ("*".join(["9" * 600] * 2), None, f"question's value has more than {MAX_DIGITS} digits"),
    ],
)
def test_arith_names_what_is_wrong(question, answer, reason):
    got = check_arith(question, answer)
    assert got is not None and reason in got, got


@pytest.mark.parametrize(
    "text,canonical",
    [
        ("3", "3"),
        (" 007 ", "7"),
        ("-0", "0"),
        ("-00", "0"),
        ("-12", "-12"),
        ("0", "0"),
        ("+3", None),
        ("3.0", None),
        ("1e3", None),
        ("", None),
        ("- 3", None),
        ("\u0663", None),
        ("9" * 10_000, "9" * 10_000),  # pure string work: no digit limit
    ],
)
def test_canonical_integer(text, canonical):
    assert canonical_integer(text) == canonical


@pytest.mark.parametrize(
    "question,answer",
    [
        (GSM8K, "72"),  # word problems are what the math domain is for
        ("Sum?", "5/6"),
        ("Half?", "\\frac{1}{2}"),
        ("Root?", "2\\sqrt{2}"),
        ("Set?", "\\{1,2\\}"),
        ("Open question", None),
    ],
)
def test_math_accepts_parsable_gold(question, answer):
    assert check_math(question, answer) is None


@pytest.mark.parametrize("answer", ["", "  ", "?!", "}{", "\\frac{"])
def test_math_refuses_gold_that_does_not_parse(answer):
    reason = check_math("q", answer)
    assert reason == (f"gold answer {answer!r} does not parse as math (math-verify finds no value)")


@pytest.mark.parametrize("name", sorted(DOMAINS))
def test_every_domain_has_a_check_and_its_own_seeds_pass_it(name):
    """The check refuses nothing the domain makes itself: generated seeds at every level and
    the eval suite (the reject tables above are the negative control)."""
    domain, check = DOMAINS[name], seed_check(name)
    rng = random.Random(0)
    seeds = [
        domain.generate(rng, lv) for lv in range(1, domain.max_difficulty + 1) for _ in range(50)
    ]
    seeds += eval_suite(domain, 64)
    assert [s.question for s in seeds if check(s.question, s.answer) is not None] == []
    assert set(SEED_CHECKS) == set(DOMAINS)


def test_unknown_domain_names_the_known_ones():
    with pytest.raises(
        ValueError, match=r"domain 'chess' has no seed-file check; known: \['arith'"
    ):
        seed_check("chess")
