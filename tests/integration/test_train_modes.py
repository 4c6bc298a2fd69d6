"""Training modes in the flywheel: `sft_then_grpo` as one generation of the tiny config, under
Prefect's test harness, with its GRPO figures read back from the stage manifest and MLflow."""

import pytest

from tasks import store
from tasks.config import load_config
from tests.runs import TINY

pytestmark = pytest.mark.slow


def test_sft_then_grpo_runs_as_one_generation(tmp_path, monkeypatch, prefect_harness):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    from mlflow import MlflowClient

    from flows.flywheel import flywheel
    from tasks.tracking import default_tracking_uri

    cfg = load_config(
        TINY,
        runs_dir=str(tmp_path),
        name="modes",
        generations=1,
        **{
            "seeds.count": 32,
            "eval.suite_size": 16,
            "train.mode": "sft_then_grpo",
            "train.cpu_threads": 1,
            "train.grpo.max_steps": 4,
            "train.grpo.max_prompts": 16,
            "train.grpo.num_generations": 4,
            "train.grpo.max_completion_length": 40,
            "train.grpo.length_buffer": 8,
            "train.grpo.rewards": {"accuracy": 1.0, "format": 0.5, "length": 0.1},
        },
    )
    rows = flywheel(cfg)
    assert [r["gen"] for r in rows] == [1] and rows[0]["challenger pass@1"] is not None

    train = tmp_path / "modes" / "gen-0001" / "train"
    out = store.read_manifest(train, verify=True).outputs
    assert out["mode"] == "sft_then_grpo"
    # The SFT half trained on accepted samples, then GRPO on 16 of the 32 seeds, from it.
    assert out["train_rows"] == out["samples"] > 0 and out["steps"] > 0
    assert out["grpo_rows"] == 16 and out["grpo_steps"] == 4
    assert len(out["reward_history"]) == 4
    for key in ("reward_mean", "reward_std", "completion_length", "zero_signal_share"):
        assert out[f"grpo.{key}"] >= 0, key
    assert set(out) >= {"grpo.reward.accuracy", "grpo.reward.format", "grpo.reward.length"}
    assert (train / "model" / "model.safetensors").is_file()
    assert not (train / "sft-model").exists()  # only the final model is kept
    assert "grpo" in (tmp_path / "modes" / "gen-0001" / "train.log").read_text()

    client = MlflowClient(default_tracking_uri(tmp_path))
    exp = client.get_experiment_by_name("modes")
    child = [
        r
        for r in client.search_runs([exp.experiment_id])
        if r.data.tags.get("flywheel.role") == "generation"
    ]
    assert len(child) == 1
    metrics, tags = child[0].data.metrics, child[0].data.tags
    assert tags["train.mode"] == "sft_then_grpo"
    assert metrics["train.grpo.reward_mean"] == pytest.approx(out["grpo.reward_mean"])
    for key in ("reward_std", "zero_signal_share", "completion_length", "clip_ratio"):
        assert f"train.grpo.{key}" in metrics, key
    assert "train.grpo.reward.accuracy" in metrics


def test_grpo_generation_trains_on_the_seeds(tmp_path):
    """The train stage in `grpo` mode: the generation's seeds (questions, gold answers) are the
    training set, the challenger is written with GRPO's figures in the stage manifest."""
    import random

    from tasks.bootstrap import bootstrap
    from tasks.domains import DOMAINS, make_seeds
    from tasks.records import to_rows
    from tasks.stages import train_stage

    cfg = load_config(
        TINY,
        runs_dir=str(tmp_path),
        name="grpo-only",
        **{
            "train.mode": "grpo",
            "train.cpu_threads": 1,
            "train.grpo.max_steps": 3,
            "train.grpo.num_generations": 4,
            "train.grpo.max_completion_length": 32,
            "train.grpo.length_buffer": 8,
        },
    )
    policy = bootstrap(
        tmp_path / "models",
        hidden_size=64,
        intermediate_size=128,
        num_layers=2,
        num_heads=2,
        max_position=128,
        pretrain_steps=50,
        batch_size=16,
        learning_rate=3e-3,
        max_difficulty=1,
        seed=0,
        exclude=set(),
        progress=False,
    )
    seeds = make_seeds(DOMAINS["arith"], 12, 1, random.Random(0), set())
    with store.write_stage(store.stage_dir(cfg.flywheel_dir, 1, "seeds"), "seeds") as (tmp, out):
        store.write_parquet(to_rows(seeds), tmp / "seeds.parquet")

    folder = train_stage.fn(cfg, 1, str(policy))
    out = store.read_manifest(folder, verify=True).outputs
    assert out["mode"] == "grpo" and out["train_rows"] == 12 and out["steps"] == 3
    assert out["base_model"] == str(policy)
    assert {"grpo.reward_mean", "grpo.zero_signal_share", "grpo.clip_ratio"} <= set(out)
    rows = store.read_parquet(folder / "grpo.parquet")
    assert sorted(r["question"] for r in rows) == sorted(s.question for s in seeds)
    assert (folder / "model" / "model.safetensors").is_file()
    assert train_stage.fn(cfg, 1, str(policy)) == folder  # done: not trained again
