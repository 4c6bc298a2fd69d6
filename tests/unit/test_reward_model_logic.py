"""The reward model's pure pieces: deterministic split, agreement figures, the `rm` verdicts."""

from __future__ import annotations

import pytest

from tasks.reward_model import split
from tasks.rewards import REWARDS
from tasks.train_rm import rm_agreement


def test_split_is_deterministic_and_disjoint():
    rows = [{"prompt": f"p{i}", "completion": "c", "label": i % 2} for i in range(400)]
    train, held = split(rows, 0.25)
    assert len(train) + len(held) == 400 and 60 < len(held) < 140
    assert split(rows, 0.25) == (train, held)
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in held}


def test_agreement_with_curation_and_judge():
    held = [{"sample_id": f"s{i}", "label": lab} for i, lab in enumerate([1, 0, 1, 0])]
    scores = [0.9, 0.2, 0.1, 0.6]
    judge = {"s0": "accept", "s1": "accept", "s3": "infra_error"}
    out = rm_agreement(held, scores, judge)
    assert out["agreement_curation"] == 0.5
    assert out["judge_compared"] == 2 and out["agreement_judge"] == 0.5


def test_rm_verdicts_threshold_and_need_precomputed_scores():
    fn, verdicts = REWARDS["rm"]
    assert [v.outcome for v in verdicts(["a", "b"], rm_score=[0.5, 0.49])] == ["accept", "reject"]
    assert fn(["p"], ["a"], rm_score=[0.7]) == [0.7]
    for call in (lambda: verdicts(["a"]), lambda: fn(["p"], ["a"], rm_model="runs/x/rm")):
        with pytest.raises(ValueError, match="`rm_score` column"):
            call()  # a reward never loads the model itself
    with pytest.raises(ValueError, match="rm_score has 1 rows for 2 completions"):
        verdicts(["a", "b"], rm_score=[0.5])
