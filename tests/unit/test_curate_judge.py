"""Curation with the judge among the rewards: precomputed votes combine with the rules."""

from __future__ import annotations

import pytest

from tasks.curate import curate
from tasks.judge import JudgeOutput, qc_metrics, vote
from tasks.records import Sample, Verdict
from tasks.rewards import REWARDS, judge_reward

OK = "<think>1+2=3</think><answer>3</answer>"
WRONG = "<think>1+2=4</think><answer>4</answer>"
RULES = ["accuracy", "format", "judge"]


def sample(i, completion=OK, answer="3"):
    return Sample(f"id{i}", f"s{i}", "Q: 1+2\n", completion, answer, 1, 0, "m", 10, "stop")


SAMPLES = [sample(0), sample(1, WRONG), sample(2, OK, None), sample(3, OK, None), sample(4)]
JUDGE = [
    Verdict("reject", "judge_reject_2of3"),  # rules accept
    Verdict("accept", "judge_accept_3of3"),  # rules reject
    Verdict("accept", "judge_accept_2of3"),  # no gold answer: only the judge can tell
    Verdict("infra_error", "judge_tie"),  # no gold answer, judge undecided
    Verdict("accept", "judge_accept_3of3"),  # both accept
]


@pytest.mark.parametrize(
    "combine,outcomes",
    [
        ("rules_then_judge", ["accept", "reject", "accept", "infra_error", "accept"]),
        ("both", ["reject", "reject", "accept", "infra_error", "accept"]),
        ("judge_only", ["reject", "accept", "accept", "infra_error", "accept"]),
    ],
)
def test_curate_combines_rules_and_judge(combine, outcomes):
    r = curate(SAMPLES, RULES, "arith", 4, columns={"judge_verdict": JUDGE}, combine=combine)
    assert [row["outcome"] for row in r.rows] == outcomes
    assert [row["reward_judge"] for row in r.rows] == [0.0, 1.0, 1.0, None, 1.0]
    assert r.rules[2] is None and r.rules[3] is None  # no gold answer: no rule applies
    assert r.rules[0] == Verdict("accept", "all_rewards_passed")
    assert r.counts["infra_error"] == 1  # the undecided judge is never a reject


def test_judge_reward_has_trl_signature_and_needs_precomputed_votes():
    fn, verdicts = REWARDS["judge"]
    assert fn is judge_reward
    assert judge_reward(["p"] * 2, [OK, WRONG], judge_verdict=JUDGE[:2]) == [0.0, 1.0]
    with pytest.raises(ValueError, match="judge_verdict has 1 rows"):
        verdicts([OK, OK], judge_verdict=JUDGE[:1])
    with pytest.raises(ValueError, match="needs the judge's votes as the `judge_verdict`"):
        judge_reward(["p"], [OK])


def test_without_judge_the_rules_alone_decide():
    r = curate(SAMPLES, ["accuracy", "format"], "arith", 4)
    assert [row["outcome"] for row in r.rows][:2] == ["accept", "reject"]
    assert "reward_judge" not in r.rows[0]


def test_qc_from_a_curation():
    a, rj = JudgeOutput("accept", "label"), JudgeOutput("reject", "label")
    votes = [vote([rj]), vote([a]), vote([a]), vote([a, rj]), vote([a])]
    r = curate(SAMPLES, RULES, "arith", 4, columns={"judge_verdict": [v.verdict for v in votes]})
    qc = qc_metrics(votes, r.rules)
    assert qc["compared"] == 3  # samples 0, 1, 4 have both a rule and a judge verdict
    assert qc["agreement"] == pytest.approx(1 / 3)


# Every rule that can apply does, whatever the judge says and whether or not there is a gold
# answer; only the answer check is "not applicable" without one.
BAD_FORMAT = "1+2=3 so 3"
REPETITIVE = "<think>a b c a b c a b c a b c</think><answer>3</answer>"


def cut(i, answer):
    return Sample(f"id{i}", f"s{i}", "Q: 1+2\n", "<think>1+2=", answer, 1, 0, "m", 96, "length")


RULE_REJECTS = [  # (sample, the rules' reason), each of them accepted by the judge
    (sample(0, BAD_FORMAT), "format:bad_format"),
    (sample(1, BAD_FORMAT, None), "format:bad_format"),
    (cut(2, "3"), "truncated"),
    (cut(3, None), "truncated"),
    (sample(4, REPETITIVE), "repetition:repetitive"),
    (sample(5, REPETITIVE, None), "repetition:repetitive"),
]


@pytest.mark.parametrize("combine", ["rules_then_judge", "both", "judge_only"])
def test_rule_rejects_stand_whatever_the_judge_says_with_or_without_gold(combine):
    samples = [s for s, _ in RULE_REJECTS]
    judge = [Verdict("accept", "judge_accept_3of3")] * len(samples)
    r = curate(
        samples,
        ["accuracy", "format", "repetition", "judge"],
        "arith",
        4,
        columns={"judge_verdict": judge},
        combine=combine,
    )
    assert [(row["outcome"], row["reason"]) for row in r.rows] == [
        ("reject", reason) for _, reason in RULE_REJECTS
    ]
    assert r.kept == []


@pytest.mark.parametrize(
    "combine,judge,outcome",
    [
        ("rules_then_judge", "accept", "accept"),
        ("rules_then_judge", "reject", "reject"),
        ("both", "accept", "accept"),
        ("both", "reject", "reject"),
        ("judge_only", "accept", "accept"),
        ("judge_only", "reject", "reject"),
    ],
)
def test_without_gold_the_judge_checks_the_answer_of_well_formed_samples(combine, judge, outcome):
    v = Verdict(judge, f"judge_{judge}_3of3")
    r = curate(
        [sample(0, OK, None)], RULES, "arith", 4, columns={"judge_verdict": [v]}, combine=combine
    )
    assert (r.rows[0]["outcome"], r.rows[0]["reason"]) == (outcome, f"judge:{v.reason}")
    assert r.rules == [None]  # the rules could not check the answer: left out of judge QC


@pytest.mark.parametrize(
    "combine,judge,outcome,reason",
    [
        ("rules_then_judge", "reject", "accept", "all_rewards_passed"),  # rules decide
        ("both", "reject", "reject", "judge:judge_reject_3of3"),
        ("both", "accept", "accept", "rules_and_judge_accept"),
        ("judge_only", "reject", "reject", "judge:judge_reject_3of3"),
    ],
)
def test_with_gold_the_combine_mode_decides_the_answer(combine, judge, outcome, reason):
    v = Verdict(judge, f"judge_{judge}_3of3")
    r = curate([sample(0)], RULES, "arith", 4, columns={"judge_verdict": [v]}, combine=combine)
    assert (r.rows[0]["outcome"], r.rows[0]["reason"]) == (outcome, reason)


def test_judge_alone_still_rejects_truncated_output():
    samples = [cut(0, None), sample(1, OK, None), sample(2, BAD_FORMAT, None)]
    judge = [Verdict("accept", "judge_accept_3of3")] * 3
    r = curate(samples, ["judge"], "arith", 4, columns={"judge_verdict": judge})
    assert [(row["outcome"], row["reason"]) for row in r.rows] == [
        ("reject", "truncated"),
        ("accept", "judge:judge_accept_3of3"),
        ("accept", "judge:judge_accept_3of3"),  # no format rule listed: the judge's call
    ]
