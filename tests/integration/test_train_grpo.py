"""GRPO with TRL on a bootstrap-pretrained tiny Llama: real rewards, real optimizer steps.

A random model scores ~0 on accuracy, so every group would be silent; the bootstrap policy
(pretrained a few seconds on level-1 arithmetic) solves ~16 % of the training prompts and
writes the format ~96 % of the time, which gives GRPO groups with signal.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from tasks.backends import generate_hf
from tasks.bootstrap import bootstrap
from tasks.config import FlywheelConfig
from tasks.domains import DOMAINS
from tasks.requests import GRPORequest, engine_spec, grpo_request, sampling_spec
from tasks.rewards import REWARDS
from tasks.store import write_parquet
from tasks.train import train_in_subprocess
from tasks.trainers.common import NonFiniteLoss
from tasks.trainers.grpo import train_grpo

pytestmark = pytest.mark.slow

WEIGHTS = {"accuracy": 1.0, "format": 0.5}
TRAIN = dict(
    grpo=dict(
        rewards=WEIGHTS,
        learning_rate=2e-4,
        epochs=1.0,
        max_steps=100,
        prompts_per_step=4,
        num_generations=8,
        max_completion_length=40,
        temperature=1.0,
        epsilon=0.2,
        beta=0.001,
        loss_type="grpo",
        num_iterations=1,
        scale_rewards="group",
        drop_zero_signal=True,
    ),
    grad_accum=1,
    warmup_ratio=0.0,
    scheduler="constant",
    max_length=128,
    bf16=False,
    seed=0,
)


def request(model: str, train_file: Path, out_dir: Path, **changes) -> GRPORequest:
    """The train stage's GRPO request under `train: TRAIN` (generation 0: the seed as set)."""
    built = grpo_request(FlywheelConfig(train=TRAIN), 0, model, train_file, out_dir)
    return dataclasses.replace(built, **changes)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on a shared 2-core machine it runs these small models several times
    faster than two (threads spin-wait on a busy core)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def policy(one_thread, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A bootstrap policy: 400 steps (~6 s) of pretraining on level-1 arithmetic."""
    root = tmp_path_factory.mktemp("models")
    return str(
        bootstrap(
            root,
            hidden_size=64,
            intermediate_size=128,
            num_layers=2,
            num_heads=2,
            max_position=128,
            pretrain_steps=400,
            batch_size=32,
            learning_rate=3e-3,
            max_difficulty=1,
            seed=0,
            label_smoothing=0.0,
            exclude=set(),
            progress=False,
        )
    )


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    rng = random.Random(5)
    items = [DOMAINS["arith"].generate(rng, 1) for _ in range(32)]
    path = tmp_path_factory.mktemp("seeds") / "seeds.parquet"
    write_parquet(
        [{"question": s.question, "answer": s.answer, "domain": "arith"} for s in items], path
    )
    return path, items


def mean_reward(model: str, items: list) -> dict[str, float]:
    """Weighted reward of 8 samples per training prompt, with a fixed sampling seed."""
    prompts = [f"Q: {s.question}\n" for s in items]
    cfg = FlywheelConfig(
        engine={"max_model_len": 128, "hf_batch_size": 64},
        sampling={"n": 8, "max_tokens": 40, "seed": 123},
    )
    out = generate_hf(model, prompts, engine_spec(cfg), sampling_spec(cfg, 0))
    completions = [c.text for cs in out for c in cs]
    answers = [s.answer for s in items for _ in range(8)]
    scores = {name: REWARDS[name][0](prompts, completions, answer=answers) for name in WEIGHTS}
    means = {name: sum(v) / len(v) for name, v in scores.items()}
    means["weighted"] = sum(WEIGHTS[n] * means[n] for n in WEIGHTS)
    return means


def test_grpo_steps_change_the_policy_and_raise_its_reward(policy, seeds, tmp_path):
    path, items = seeds
    before = mean_reward(policy, items)
    out = tmp_path / "model"
    metrics = train_in_subprocess(
        request(policy, path, out, cpu_threads=1), log_path=tmp_path / "train.log"
    )
    after = mean_reward(str(out), items)
    print("weighted reward before/after:", before, after)
    # Measured: weighted 0.643 -> 0.766 (accuracy 0.160 -> 0.273, format 0.965 -> 0.984).
    # Across other policy and training seeds the gain was +0.055 to +0.19; the earlier recipe
    # (lr 3e-4, 40 steps) ranged from -0.03 to +0.09, and different CPUs pick different seeds'
    # luck, so the margin here must hold for any seed, not one.
    assert after["weighted"] > before["weighted"] + 0.03, (before, after)
    assert after["accuracy"] > before["accuracy"], (before, after)

    assert metrics["steps"] == 100 and metrics["samples"] == 32
    for key in ("reward_mean", "reward_std", "completion_length", "kl"):
        assert metrics[f"grpo.{key}"] > 0, key
    assert 0 <= metrics["grpo.clip_ratio"] <= 1 and 0 <= metrics["grpo.truncated_ratio"] <= 1
    assert 0 < metrics["grpo.reward.accuracy"] < 1 and 0 < metrics["grpo.reward.format"] <= 1
    # Silent groups happen (all 8 samples right or all wrong), and every one of them is dropped.
    assert 0 < metrics["grpo.zero_signal_share"] < 1
    assert metrics["grpo.groups_dropped"] == pytest.approx(metrics["grpo.zero_signal_share"])
    assert len(metrics["reward_history"]) == 100

    trained = dict(AutoModelForCausalLM.from_pretrained(out).named_parameters())
    base = AutoModelForCausalLM.from_pretrained(policy)
    changed = [n for n, p in base.named_parameters() if not torch.equal(p, trained[n])]
    assert len(changed) == len(trained)
    assert not [f for f in out.iterdir() if f.suffix in (".bin", ".pt", ".pkl")]


def test_nan_weights_stop_grpo_and_save_nothing(policy, seeds, tmp_path):
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for f in Path(policy).iterdir():
        if f.is_file():
            (corrupt / f.name).write_bytes(f.read_bytes())
    weights = load_file(corrupt / "model.safetensors")
    name = next(k for k in weights if "layers.0.mlp" in k)
    weights[name][0, 0] = float("nan")
    save_file(weights, corrupt / "model.safetensors", metadata={"format": "pt"})

    out = tmp_path / "model"
    with pytest.raises(NonFiniteLoss, match="non-finite"):
        train_grpo(request(str(corrupt), seeds[0], out, max_steps=2, progress=False))
    assert not out.exists() or not list(out.iterdir())


def test_missing_gold_column_is_named(policy, tmp_path):
    path = tmp_path / "bad.parquet"
    write_parquet([{"question": "1+2"}], path)
    with pytest.raises(ValueError, match="missing column.*answer"):
        train_grpo(request(policy, path, tmp_path / "out", progress=False))
