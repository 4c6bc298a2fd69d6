import random

import pytest

from tasks.domains import DOMAINS, eval_suite
from tasks.domains import math as m
from tasks.rewards import accuracy_verdict, format_verdict

MATH = DOMAINS["math"]


@pytest.mark.parametrize(
    "question,answer,solution",
    [
        ("1/2+1/3", "5/6", "<think>1/2+1/3=5/6</think><answer>5/6</answer>"),
        ("2/4+1/2", "1", "<think>2/4+1/2=1</think><answer>1</answer>"),
        ("1/6-2/3-2/3", "-7/6", "<think>1/6-2/3=-1/2\n-1/2-2/3=-7/6</think><answer>-7/6</answer>"),
    ],
)
def test_reference_solution(question, answer, solution):
    assert m.fraction_text(m._value(question)) == answer
    assert m.solution(question) == solution


@pytest.mark.parametrize("level", sorted(m.LEVELS))
def test_generated_seeds_verify_with_their_own_solution(level):
    rng = random.Random(level)
    for _ in range(20):
        seed = MATH.generate(rng, level)
        completion = MATH.solution(seed.question)
        assert format_verdict(completion).outcome == "accept"
        assert accuracy_verdict(completion, seed.answer, "math").reason == "correct"


@pytest.mark.parametrize(
    "answer,gold,outcome,reason",
    [
        ("7/12", "7/12", "accept", "correct"),
        ("\\frac{7}{12}", "7/12", "accept", "correct"),
        ("0.5", "1/2", "accept", "correct"),
        ("7/13", "7/12", "reject", "wrong"),
        ("", "7/12", "reject", "unparsable_answer"),
        ("7/12", "", "infra_error", "unparsable_gold"),
        ("\\frac{", "\\frac{", "infra_error", "unparsable_gold"),
    ],
)
def test_verify(answer, gold, outcome, reason):
    assert m.verify(answer, gold) == m.Verdict(outcome, reason)


def test_eval_suite_is_frozen_and_distinct():
    a, b = eval_suite(MATH, 40), eval_suite(MATH, 40)
    assert a == b and len({s.question for s in a}) == 40


def test_read_problem_keeps_only_computable_fraction_sums_and_mutate_adds_a_term():
    import random

    from tasks.domains import math as m

    seed = m.read_problem(" 1/2 + 1/3 ")
    assert seed is not None and seed.question == "1/2+1/3" and seed.answer == "5/6"
    assert seed.origin == "proposed"
    for bad in ("1/0+1/2", "what is 1/2+1/3", "1/2", "1/2*1/3", ""):
        assert m.read_problem(bad) is None, bad
    harder = m.mutate(seed, random.Random(0))
    assert len(harder.question.replace("-", "+").split("+")) == 3
    assert harder.difficulty == seed.difficulty + 1
    assert m.verify(harder.answer, m.fraction_text(m._value(harder.question))).outcome == "accept"
