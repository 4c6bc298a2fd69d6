import random

import pytest

from tasks.domains import DOMAINS, eval_suite, make_seeds
from tasks.domains.arith import LEVELS, ParseError, evaluate, generate, solution, verify


@pytest.mark.parametrize(
    "expr,value",
    [
        ("1+2", 3),
        ("13-4+17", 26),
        ("2*(3+4)-5", 9),
        ("-3+4", 1),
        ("10-20-30", -40),
        ("2*3*4", 24),
        (" 7 + 8 ", 15),
        ("((5))", 5),
    ],
)
def test_evaluate(expr, value):
    assert evaluate(expr) == value


@pytest.mark.parametrize("expr", ["", "1+", "1++", "(1+2", "1+2)", "1/2", "import os", "1 2"])
def test_evaluate_rejects_malformed(expr):
    with pytest.raises(ParseError):
        evaluate(expr)


def test_solution_steps_are_correct_and_in_r1_format():
    assert solution("13-4+17") == "<think>13-4=9\n9+17=26</think><answer>26</answer>"
    assert solution("5") == "<think></think><answer>5</answer>"
    with pytest.raises(ValueError):
        solution("2*3")


@pytest.mark.parametrize("level", sorted(LEVELS))
def test_generate_levels(level):
    rng = random.Random(level)
    for _ in range(50):
        s = generate(rng, level)
        operands, bound = LEVELS[level]
        assert s.question.count("+") + s.question.count("-") == operands - 1
        assert int(s.answer) == evaluate(s.question)
        assert solution(s.question).endswith(f"<answer>{s.answer}</answer>")


@pytest.mark.parametrize(
    "answer,gold,outcome,reason",
    [
        ("26", "26", "accept", "correct"),
        ("-4", "-4", "accept", "correct"),
        ("0", "0", "accept", "correct"),
        ("25", "26", "reject", "wrong"),
        (" 26 ", "26", "reject", "non_canonical"),  # the extractor strips; the verifier does not
        ("26.0", "26", "reject", "non_canonical"),
        ("", "26", "reject", "unparsable_answer"),
        ("x", "26", "reject", "unparsable_answer"),
        ("26", "026", "infra_error", "non_canonical_gold"),
    ],
)
def test_verify(answer, gold, outcome, reason):
    v = verify(answer, gold)
    assert (v.outcome, v.reason) == (outcome, reason)


def test_eval_suite_is_frozen_balanced_and_disjoint_from_seeds():
    d = DOMAINS["arith"]
    suite = eval_suite(d, 512)
    assert suite == eval_suite(d, 512)
    assert len({s.question for s in suite}) == 512
    assert {s.difficulty for s in suite} == {1, 2, 3, 4}
    qs = {s.question for s in suite}
    seeds = make_seeds(d, 3000, [1, 2, 3, 4], random.Random(0), qs)
    assert len(seeds) == 3000
    assert not qs & {s.question for s in seeds}
