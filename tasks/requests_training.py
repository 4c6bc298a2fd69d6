"""Requests for training: SFT, GKD, GRPO and the reward model's; one builder each from the
config (see `tasks.requests`). Every trainer's request also says how its worker is launched."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

from tasks.config import FlywheelConfig


@dataclasses.dataclass(frozen=True)
class LaunchedRequest:
    """How a training worker is started (`train.launcher`, `train.num_processes`,
    `train.accelerate_config`): `tasks.train` builds the command from them, and every process
    checks that what accelerate set up is what they asked for."""

    launcher: str
    num_processes: int
    accelerate_config: str | None


@dataclasses.dataclass(frozen=True)
class SupervisedRequest(LaunchedRequest):
    """What an SFT and a GKD run share: the paths, then `train.*`'s optimisation settings.

    `seed` is `train.seed` plus the generation, so each generation shuffles its data anew;
    `progress` shows the rich bar (off in benchmarks that time the worker)."""

    base_model: str
    train_file: str
    out_dir: str
    learning_rate: float
    epochs: float
    batch_size: int
    grad_accum: int
    warmup_ratio: float
    scheduler: str
    max_length: int
    bf16: bool
    seed: int
    cpu_threads: int | None
    gradient_checkpointing: bool
    progress: bool


@dataclasses.dataclass(frozen=True)
class SFTRequest(SupervisedRequest):
    """One SFT run (`tasks.trainers.sft.train_sft`), with packing and the cosine floor."""

    mode: ClassVar[str] = "sft"

    packing: bool
    min_lr_ratio: float | None


@dataclasses.dataclass(frozen=True)
class GKDRequest(SupervisedRequest):
    """One GKD run (`tasks.trainers.gkd.train_gkd`): SFT's optimisation settings (no packing
    or cosine floor: the GKD collator pads) plus the teacher and `train.gkd.*`'s knobs."""

    mode: ClassVar[str] = "gkd"

    teacher: str
    lmbda: float
    beta: float
    temperature: float
    max_new_tokens: int


@dataclasses.dataclass(frozen=True)
class DPORequest(SupervisedRequest):
    """One DPO run (`tasks.trainers.dpo.train_dpo`) on a file of prompt / chosen / rejected
    pairs: `train.*`'s optimisation settings (`train.dpo.learning_rate` in place of
    `train.learning_rate`) plus `train.dpo.*`'s loss."""

    mode: ClassVar[str] = "dpo"

    loss_type: str
    beta: float


@dataclasses.dataclass(frozen=True)
class GRPORequest(LaunchedRequest):
    """One GRPO run (`tasks.trainers.grpo.train_grpo`): the paths, the generation's rewards and
    weights, `train.grpo.*`'s knobs, `train.*`'s shared settings and `model.*`'s prompt format.

    `max_completion_length` also bounds the `length` reward and `repetition_ngram` sizes the
    `repetition` reward's n-grams, as in curation."""

    mode: ClassVar[str] = "grpo"

    base_model: str
    train_file: str
    out_dir: str
    rewards: dict[str, float]
    learning_rate: float
    epochs: float
    max_steps: int | None
    prompts_per_step: int
    grad_accum: int
    num_generations: int
    max_completion_length: int
    temperature: float
    epsilon: float
    beta: float
    loss_type: str
    num_iterations: int
    scale_rewards: str
    drop_zero_signal: bool
    length_buffer: int
    repetition_ngram: int
    vllm_mode: str | None
    vllm_server_url: str | None
    vllm_gpu_memory_utilization: float
    warmup_ratio: float
    scheduler: str
    max_length: int
    bf16: bool
    seed: int
    prompt_template: str
    chat_template: bool
    system_prompt: str | None
    gradient_checkpointing: bool
    cpu_threads: int | None
    progress: bool


TrainRequest = SFTRequest | GKDRequest | GRPORequest | DPORequest


def _launch(cfg: FlywheelConfig) -> dict:
    """`train.*`'s launch settings, under their YAML names."""
    t = cfg.train
    config = t.accelerate_config
    return dict(
        launcher=t.launcher,
        num_processes=t.num_processes,
        accelerate_config=str(config) if config is not None else None,
    )


def _optimisation(cfg: FlywheelConfig, generation: int) -> dict:
    """`train.*`'s settings that SFT and GKD share, under their YAML names."""
    t = cfg.train
    return dict(
        **_launch(cfg),
        learning_rate=t.sft_learning_rate(generation),
        epochs=t.epochs,
        batch_size=t.batch_size,
        grad_accum=t.grad_accum,
        warmup_ratio=t.warmup_ratio,
        scheduler=t.scheduler,
        max_length=t.max_length,
        bf16=t.bf16,
        seed=t.seed + generation,
        cpu_threads=t.cpu_threads,
        gradient_checkpointing=t.gradient_checkpointing,
        progress=True,
    )


def sft_request(
    cfg: FlywheelConfig, generation: int, base_model: str, train_file: Path, out_dir: Path
) -> SFTRequest:
    """SFT of `base_model` on `train_file`'s prompt/completion pairs into `out_dir`."""
    return SFTRequest(
        base_model=str(base_model),
        train_file=str(train_file),
        out_dir=str(out_dir),
        packing=cfg.train.packing,
        min_lr_ratio=cfg.train.min_lr_ratio,
        **_optimisation(cfg, generation),
    )


def gkd_request(
    cfg: FlywheelConfig, generation: int, base_model: str, train_file: Path, out_dir: Path
) -> GKDRequest:
    """GKD of `train.gkd.teacher` (else the first of `distill.teachers`) into `base_model`."""
    k = cfg.train.gkd
    return GKDRequest(
        base_model=str(base_model),
        train_file=str(train_file),
        out_dir=str(out_dir),
        teacher=str(k.teacher if k.teacher is not None else cfg.distill.teachers[0]),
        lmbda=k.lmbda,
        beta=k.beta,
        temperature=k.temperature,
        max_new_tokens=k.max_new_tokens,
        **_optimisation(cfg, generation),
    )


def dpo_request(
    cfg: FlywheelConfig, generation: int, base_model: str, train_file: Path, out_dir: Path
) -> DPORequest:
    """DPO of `base_model` on `train_file`'s preference pairs into `out_dir`."""
    d = cfg.train.dpo
    return DPORequest(
        base_model=str(base_model),
        train_file=str(train_file),
        out_dir=str(out_dir),
        loss_type=d.loss_type,
        beta=d.beta,
        **(_optimisation(cfg, generation) | {"learning_rate": d.learning_rate}),
    )


def grpo_request(
    cfg: FlywheelConfig, generation: int, base_model: str, train_file: Path, out_dir: Path
) -> GRPORequest:
    """GRPO of `base_model` on `train_file`'s seeds with the generation's rewards."""
    t, g, m = cfg.train, cfg.train.grpo, cfg.model
    return GRPORequest(
        base_model=str(base_model),
        train_file=str(train_file),
        out_dir=str(out_dir),
        rewards=t.grpo_rewards(generation),
        learning_rate=g.learning_rate,
        epochs=g.epochs,
        max_steps=g.max_steps,
        prompts_per_step=g.prompts_per_step,
        grad_accum=t.grad_accum,
        num_generations=g.num_generations,
        max_completion_length=g.max_completion_length,
        temperature=g.temperature,
        epsilon=g.epsilon,
        beta=g.beta,
        loss_type=g.loss_type,
        num_iterations=g.num_iterations,
        scale_rewards=g.scale_rewards,
        drop_zero_signal=g.drop_zero_signal,
        length_buffer=g.length_buffer,
        repetition_ngram=g.repetition_ngram,
        vllm_mode=g.vllm_mode,
        vllm_server_url=g.vllm_server_url,
        vllm_gpu_memory_utilization=g.vllm_gpu_memory_utilization,
        warmup_ratio=t.warmup_ratio,
        scheduler=t.scheduler,
        max_length=t.max_length,
        bf16=t.bf16,
        seed=t.seed + generation,
        prompt_template=m.prompt_template,
        chat_template=m.chat_template,
        system_prompt=m.system_prompt,
        gradient_checkpointing=t.gradient_checkpointing,
        cpu_threads=t.cpu_threads,
        progress=True,
        **_launch(cfg),
    )


@dataclasses.dataclass(frozen=True)
class RewardModelRequest:
    """Training the scalar reward model (`tasks.reward_model.train_rm`): a tiny Llama body of
    this shape under a one-logit head, `steps` balanced batches of BCE on labelled rows."""

    op: ClassVar[str] = "train"

    train_file: str
    out_dir: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    max_len: int
    steps: int
    batch_size: int
    learning_rate: float
    seed: int
    progress: bool


@dataclasses.dataclass(frozen=True)
class RewardModelScoreRequest:
    """Scoring (prompt, completion) pairs with a trained reward model (`tasks.reward_model.score`)
    in batches of `batch_size`."""

    op: ClassVar[str] = "score"

    model_dir: str
    prompts: list[str]
    completions: list[str]
    batch_size: int


def reward_model_request(train_file: Path, out_dir: Path, steps: int) -> RewardModelRequest:
    """`flywheel train-rm`'s request. The reward model has no config section: its shape (the
    size of the bootstrap's tiny models) and its schedule are fixed here; the command sets the
    step count."""
    return RewardModelRequest(
        train_file=str(train_file),
        out_dir=str(out_dir),
        hidden_size=128,
        intermediate_size=256,
        num_layers=2,
        num_heads=2,
        max_len=256,
        steps=steps,
        batch_size=32,
        learning_rate=1e-3,
        seed=0,
        progress=True,
    )
