from pathlib import Path

import pytest

from tasks.config import ConfigError, FlywheelConfig, load_config
from tasks.requests_training import sft_request


def test_schedule_picks_each_generations_recipe_and_repeats_the_last():
    cfg = FlywheelConfig.model_validate(
        {
            "train": {
                "schedule": [
                    {"mode": "sft", "label": "cold-start"},
                    {"mode": "grpo", "rewards": {"accuracy": 1.0, "language": 0.2}},
                    {"mode": "sft_then_grpo"},
                ]
            }
        }
    )
    t = cfg.train
    assert [t.stage(g).mode for g in (1, 2, 3, 4, 9)] == ["sft", "grpo", "sft_then_grpo"] + [
        "sft_then_grpo"
    ] * 2
    assert t.stage(1).label == "cold-start"
    assert t.grpo_rewards(2) == {"accuracy": 1.0, "language": 0.2}
    assert t.grpo_rewards(3) == t.grpo.rewards == {"accuracy": 1.0, "format": 0.5}


def test_a_schedule_entry_sets_its_generations_sft_learning_rate():
    cfg = FlywheelConfig.model_validate(
        {
            "train": {
                "learning_rate": 5e-4,
                "schedule": [{"mode": "sft", "learning_rate": 1e-4}, {"mode": "sft"}],
            }
        }
    )
    assert [cfg.train.sft_learning_rate(g) for g in (1, 2, 3)] == [1e-4, 5e-4, 5e-4]
    request = sft_request(cfg, 1, "base", Path("t.parquet"), Path("out"))
    assert request.learning_rate == 1e-4
    assert sft_request(cfg, 2, "base", Path("t.parquet"), Path("out")).learning_rate == 5e-4


def test_without_schedule_every_generation_uses_mode():
    t = FlywheelConfig.model_validate({"train": {"mode": "grpo"}}).train
    assert t.stage(1).mode == t.stage(7).mode == "grpo"
    assert t.grpo.beta == 0.001  # R1's KL coefficient, not TRL's 0


@pytest.mark.parametrize(
    "yaml_text,field,rule",
    [
        ("train:\n  mode: ppo\n", "train.mode", "'sft', 'grpo', 'sft_then_grpo', 'gkd' or 'dpo'"),
        ("train:\n  mode: gkd\n", "(top level)", "needs train.gkd.teacher or distill.teachers"),
        ("train:\n  gkd:\n    lmbda: 2\n", "train.gkd.lmbda", "less than or equal to 1"),
        ("train:\n  grpo:\n    rewards: {vibes: 1.0}\n", "train.grpo.rewards", "unknown"),
        ("train:\n  grpo:\n    rewards: {}\n", "train.grpo.rewards", "at least 1"),
        (
            "train:\n  grpo:\n    num_generations: 1\n",
            "train.grpo.num_generations",
            "greater than or equal to 2",
        ),
        ("train:\n  grpo:\n    epsilon: 1.5\n", "train.grpo.epsilon", "less than 1"),
        ("train:\n  grpo:\n    loss_type: ppo\n", "train.grpo.loss_type", "'grpo'"),
        (
            "train:\n  schedule:\n    - {mode: grpo, rewards: {nope: 1}}\n",
            "train.schedule.0.rewards",
            "unknown",
        ),
        ("train:\n  grpo:\n    length_buffer: 500\n", "train.grpo", "length_buffer"),
    ],
)
def test_invalid_training_config_names_field_and_rule(tmp_path, yaml_text, field, rule):
    p = tmp_path / "bad.yaml"
    p.write_text(yaml_text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert field in str(e.value) and rule in str(e.value)
