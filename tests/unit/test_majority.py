"""The one majority vote: grouped by the verifier, no votes from rejected spellings, ties lose."""

import pytest

from tasks.metrics import report, score_item
from tasks.rewards import majority_answer, self_consistency_reward


def _c(answer: str) -> str:
    return f"<think>t</think><answer>{answer}</answer>"


@pytest.mark.parametrize(
    "answers,domain,min_votes,expected",
    [
        (["7", "7", "8"], "arith", 1, "7"),
        (["7"], "arith", 1, "7"),  # one valid answer is its own majority
        (["7"], "arith", 2, None),  # unless two votes are required
        (["7", "8"], "arith", 1, None),  # a tie for the top is no majority
        (["7", "7", "8", "8", "9"], "arith", 1, None),
        (["007", "007", "8"], "arith", 1, "8"),  # non-canonical spellings are no votes
        (["-0", "-0", "+0", "0"], "arith", 1, "0"),
        (["１", "１", "1"], "arith", 1, "1"),  # nor are non-ASCII digits
        (["x", "x", None, "3"], "arith", 1, "3"),  # nor unparsable or missing answers
        ([None, "x"], "arith", 1, None),
        ([], "arith", 1, None),
        (["0.5", "1/3", "1/2"], "math", 1, "0.5"),  # one value, two spellings: one group
        (["1/3", "\\frac{1}{2}", "1/3", "0.5", "2/4"], "math", 1, "\\frac{1}{2}"),
        (["1/3", "1/2"], "math", 1, None),
    ],
)
def test_majority_answer(answers, domain, min_votes, expected):
    assert majority_answer(answers, domain, min_votes=min_votes) == expected


@pytest.mark.parametrize(
    "answers,gold,domain,majority_correct",
    [
        (["1/3", "0.5", "1/2"], "1/2", "math", True),  # 0.5 and 1/2 outvote 1/3
        (["1/3", "1/3", "0.5", "1/2", "2/4"], "1/2", "math", True),
        (["3", "4"], "3", "arith", False),  # tie: no majority, even with the gold in it
        (["3", "3", "4", "4"], "4", "arith", False),
        (["007", "007", "8"], "8", "arith", True),  # 007 is no vote
        (["3"], "3", "arith", True),  # k=1
        (["4"], "3", "arith", False),
        (["x"], "3", "arith", False),
    ],
)
def test_maj_at_k_groups_by_the_verifier(answers, gold, domain, majority_correct):
    n = len(answers)
    item = score_item("i", 1, gold, domain, [_c(a) for a in answers], [1] * n, ["stop"] * n)
    assert item.majority_correct is majority_correct


def test_maj_at_1_equals_pass_at_1():
    items = [
        score_item(str(i), 1, "3", "arith", [_c(a)], [1], ["stop"])
        for i, a in enumerate(["3", "4", "3", "x", "03"])
    ]
    rep = report(items, k=1)
    assert rep["maj@1"] == rep["pass@1"] == pytest.approx(2 / 5)


def test_self_consistency_takes_no_votes_from_non_canonical_spellings():
    completions = [_c(a) for a in ["007", "007", "8"]]
    got = self_consistency_reward(["p"] * 3, completions, answer=[None] * 3)
    assert got == [None, None, None]  # one valid vote is no pseudo-label
    completions = [_c(a) for a in ["007", "8", "8"]]
    got = self_consistency_reward(["p"] * 3, completions, answer=[None] * 3)
    assert got == [0.0, 1.0, 1.0]
