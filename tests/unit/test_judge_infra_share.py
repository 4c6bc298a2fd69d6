"""`judge.max_infra_error_share`: the share of a generation's judge votes that are infra_error,
and the stop past the limit (`tasks.judge.infra_error_share`)."""

from __future__ import annotations

import pytest

from tasks.config import FlywheelConfig
from tasks.judge import JudgeInfraErrors, JudgeVote, infra_error_share

OK = JudgeVote("accept", "judge_accept_3of3", 3, 0, 0, 1.0)
NO = JudgeVote("reject", "judge_reject_2of3", 1, 2, 0, 1 / 3)
DOWN = JudgeVote("infra_error", "judge_errors:backend_error", 0, 0, 3, 0.0)
TIE = JudgeVote("infra_error", "judge_tie", 1, 1, 1, 0.0)


@pytest.mark.parametrize(
    "votes,limit,share",
    [
        ([], 0.1, 0.0),
        ([OK, NO] * 5, 0.0, 0.0),
        ([OK] * 9 + [DOWN], 0.1, 0.1),  # at the limit: goes on
        ([OK] * 3 + [TIE], 0.25, 0.25),
        ([DOWN] * 4, 1.0, 1.0),
    ],
)
def test_share_at_or_under_the_limit_goes_on(votes, limit, share):
    assert infra_error_share(votes, limit) == pytest.approx(share)


@pytest.mark.parametrize(
    "votes,limit,expect",
    [
        ([OK] * 8 + [DOWN, DOWN], 0.1, r"2 of 10 votes \(20\.0%\) .*backend_error 2.* 0\.1\b"),
        ([OK, DOWN, DOWN, TIE], 0.5, r"3 of 4 votes \(75\.0%\) .*backend_error 2, judge_tie 1"),
        ([DOWN], 0.0, r"1 of 1 votes .*max_infra_error_share 0\b"),
    ],
)
def test_share_past_the_limit_stops_naming_count_reasons_and_limit(votes, limit, expect):
    with pytest.raises(JudgeInfraErrors, match=expect):
        infra_error_share(votes, limit)


def test_the_limit_is_a_judge_setting_between_0_and_1():
    assert FlywheelConfig().judge.max_infra_error_share == 0.1
    with pytest.raises(ValueError, match="max_infra_error_share"):
        FlywheelConfig(judge={"max_infra_error_share": 1.5})
