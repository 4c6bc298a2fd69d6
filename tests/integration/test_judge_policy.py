"""The bootstrap judge made the way the flow makes it, after the base policy: the policy is
sampled by its real HF `generate` on training questions, labelled by the rules and mixed into a
few judge training steps; the judge's recipe names that policy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.config import FlywheelConfig

pytestmark = pytest.mark.slow


def _cfg(tmp_path, policy_samples: int) -> FlywheelConfig:
    return FlywheelConfig(
        name="judge-policy",
        runs_dir=tmp_path,
        bootstrap={
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_layers": 2,
            "num_heads": 2,
            "pretrain_steps": 20,
            "batch_size": 16,
            "max_difficulty": 1,
        },
        sampling={"max_tokens": 40},
        eval={"suite_size": 32},
        judge={"steps": 3, "batch_size": 8, "policy_samples": policy_samples},
    )


def test_judge_is_built_on_the_base_policy_samples(tmp_path):
    from tasks.judge_bootstrap import policy_fingerprint
    from tasks.stages import base_model_stage, judge_model_path, suite_stage
    from tasks.store import read_manifest

    cfg = _cfg(tmp_path, policy_samples=12)
    suite = suite_stage.fn(cfg)
    judge = judge_model_path(cfg, suite)
    policy = base_model_stage.fn(cfg, suite)  # cached: made by the judge's stage above
    assert read_manifest(judge) is not None
    recipe = json.loads((Path(judge) / "recipe.json").read_text())
    assert recipe["policy_samples"] == 12
    assert recipe["policy"] == policy_fingerprint(policy)
    assert recipe["policy_sampling"]["max_tokens"] == 40
    assert recipe["exclude"]  # the suite stays out of training

    plain = judge_model_path(_cfg(tmp_path, policy_samples=0), suite)
    assert plain != judge
    assert "policy_samples" not in json.loads((Path(plain) / "recipe.json").read_text())
