"""The flywheel config's training sections: the recipe (`train`: SFT, GRPO, GKD, schedules, how
the trainer is launched) and the teachers of distillation (`distill`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from tasks.config_generation import Section

TrainMode = Literal["sft", "grpo", "sft_then_grpo", "gkd", "dpo"]

# Rewards scored by a model that the GRPO worker does not load: the judge and the reward model
# run in their own worker over a whole stage's samples (curation passes their outputs in), and
# the GRPO worker is handed neither their settings nor their outputs.
MODEL_REWARDS = ("judge", "rm")


def _grpo_callable(rewards: dict[str, float] | None) -> dict[str, float] | None:
    """Refuse rewards the GRPO worker cannot compute, at config load rather than mid-training."""
    bad = [r for r in rewards or {} if r in MODEL_REWARDS]
    if bad:
        raise ValueError(
            f"{bad} cannot score GRPO groups: the judge and the reward model run only in "
            "curation (list them in curation.rewards); use rule rewards here"
        )
    return rewards


# What each `distributed_type` of an accelerate config file runs under `accelerate launch`. The
# others are refused: `MULTI_CPU` and `NO` go to accelerate's single-process launcher, which
# starts one process whatever `--num_processes` says (`--cpu --num_processes 2` too); DDP on CPU
# is `MULTI_GPU`, whose torchrun launcher gives processes without a GPU the gloo backend.
LAUNCHED = {
    "MULTI_GPU": "DDP: a full replica per process, gradients all-reduced; gloo on CPU",
    "FSDP": "parameters, gradients and optimizer state sharded; GPUs only",
    "DEEPSPEED": "DeepSpeed ZeRO; GPUs only, needs the deepspeed package",
}


def accelerate_type(path: Path | str) -> str:
    """The `distributed_type` of the accelerate config file at `path`; a missing or unreadable
    file, or a type `accelerate launch` would not run as several processes, is an error naming
    `train.accelerate_config`."""
    where = f"train.accelerate_config: {path}"
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise ValueError(f"{where}: cannot read it ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        raise ValueError(f"{where}: not valid YAML: {e}") from None
    kind = data.get("distributed_type") if isinstance(data, dict) else None
    if kind not in LAUNCHED:
        raise ValueError(
            f"{where}: distributed_type {kind!r} is not one this project launches; use one of "
            f"{sorted(LAUNCHED)} (MULTI_CPU and NO start a single process under accelerate "
            "launch; DDP on CPU is MULTI_GPU, configs/accelerate/ddp.yaml)"
        )
    return kind


class GKDSection(Section):
    """Logit distillation (TRL's GKD) from a teacher sharing the student's tokenizer."""

    teacher: Path | None = Field(
        None, description="Teacher checkpoint (None: the first of distill.teachers)."
    )
    lmbda: float = Field(0.5, ge=0, le=1, description="Share of batches on the student's samples.")
    beta: float = Field(
        0.5, ge=0, le=1, description="Generalized JSD mix: 0 forward KL, 1 reverse KL."
    )
    temperature: float = Field(0.9, gt=0, description="Sampling temperature of on-policy batches.")
    max_new_tokens: int = Field(96, gt=0, description="Longest on-policy sample (tokens).")


class DPOSection(Section):
    """Preference optimisation (TRL's `DPOTrainer`) on the generation's preference pairs
    (`tasks.preference`: an accepted and a rejected sample of one seed); the reference model is
    the base model frozen."""

    loss_type: Literal["sigmoid", "sigmoid_norm", "ipo", "hinge", "robust", "apo_zero"] = Field(
        "sigmoid",
        description="TRL's DPO loss: `sigmoid` (DPO), `sigmoid_norm` (length-normalised log "
        "ratios, SimPO-style), `ipo`, `hinge`, `robust`, `apo_zero`.",
    )
    beta: float = Field(0.1, gt=0, description="Strength of the pull towards the reference.")
    learning_rate: float = Field(1e-4, gt=0, description="Peak learning rate (~5e-7 real models).")
    pairs_per_seed: int = Field(4, gt=0, description="Most preference pairs drawn per seed.")


class GRPOSection(Section):
    """GRPO on the generation's seeds (TRL's `GRPOTrainer`); R1's values set explicitly."""

    rewards: dict[str, float] = Field(
        default_factory=lambda: {"accuracy": 1.0, "format": 0.5},
        min_length=1,
        description="Rewards (names in tasks.rewards.REWARDS, except the model-scored judge and "
        "rm) and their weights in the sum.",
    )
    learning_rate: float = Field(3e-4, gt=0, description="Peak learning rate (~1e-6 real models).")
    epochs: float = Field(1.0, gt=0, description="Passes over the generation's seeds.")
    max_steps: int | None = Field(
        None, gt=0, description="Stop after this many steps (None: epochs)."
    )
    max_prompts: int | None = Field(
        None, gt=0, description="Train on at most this many of the generation's seeds (None: all)."
    )
    prompts_per_step: int = Field(4, gt=0, description="Prompts (groups) per micro-batch.")
    num_generations: int = Field(8, ge=2, description="Group size: samples per prompt.")
    max_completion_length: int = Field(96, gt=0, description="Longest sampled completion (tokens).")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of the groups.")
    epsilon: float = Field(0.2, gt=0, lt=1, description="Clip range of the policy ratio.")
    beta: float = Field(0.001, ge=0, description="KL coefficient (R1: 0.001; TRL's default is 0).")
    loss_type: Literal["grpo", "dr_grpo", "dapo", "bnpo"] = Field(
        "grpo", description="Token aggregation: `grpo` (R1, per-sequence mean), `dapo`, ..."
    )
    num_iterations: int = Field(1, gt=0, description="Updates per sampled batch (mu).")
    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group", description="Divide advantages by the group's reward std (`none`: Dr. GRPO)."
    )
    drop_zero_signal: bool = Field(
        True,
        description="Leave groups whose samples all scored the same out of the loss and its "
        "normaliser: the step is the step on the other groups (no refill with new groups).",
    )
    length_buffer: int = Field(
        32, gt=0, description="`length` reward: soft-penalty zone before max_completion_length."
    )
    repetition_ngram: int = Field(3, gt=0, description="`repetition` reward: n-gram size.")
    vllm_mode: Literal["colocate", "server"] | None = Field(
        None,
        description="GPUs only: sample the groups with vLLM (TRL's `use_vllm`), `colocate` (an "
        "engine inside each training process) or `server` (a `trl vllm-serve` at "
        "vllm_server_url); None: TRL's transformers `generate` in the trainer (CPU).",
    )
    vllm_server_url: str | None = Field(
        None,
        pattern=r"^https?://\S+$",
        description="vllm_mode server: the base URL of `trl vllm-serve`, e.g. http://gpu-0:8000.",
    )
    vllm_gpu_memory_utilization: float = Field(
        0.3, gt=0, le=1, description="vllm_mode colocate: share of each GPU the engine reserves."
    )

    _rewards_callable = field_validator("rewards")(_grpo_callable)

    @model_validator(mode="after")
    def _buffer_fits(self) -> GRPOSection:
        if self.length_buffer > self.max_completion_length:
            raise ValueError("length_buffer must not exceed max_completion_length")
        return self

    @model_validator(mode="after")
    def _server_named(self) -> GRPOSection:
        if (self.vllm_mode == "server") != (self.vllm_server_url is not None):
            raise ValueError(
                "vllm_server_url is needed with vllm_mode server, and only then "
                f"(vllm_mode={self.vllm_mode!r}, vllm_server_url={self.vllm_server_url!r})"
            )
        return self


class ScheduleEntry(Section):
    """One generation's training in a schedule (e.g. one stage of the R1 recipe)."""

    mode: TrainMode = Field(description="Training recipe of this generation.")
    label: str | None = Field(None, description="Name of the stage, shown in the run's tags.")
    rewards: dict[str, float] | None = Field(
        None, description="GRPO rewards and weights for this generation (None: train.grpo's)."
    )
    learning_rate: float | None = Field(
        None,
        gt=0,
        description="Peak learning rate of this generation's SFT or GKD (None: "
        "train.learning_rate); e.g. a lower rate while a generation's accepted set is small.",
    )

    _rewards_callable = field_validator("rewards")(_grpo_callable)


class TrainConfig(Section):
    mode: TrainMode = Field(
        "sft",
        description="Training recipe per generation: `sft` on accepted samples, `grpo` on the "
        "seeds, `sft_then_grpo` (GRPO starting from this generation's SFT model), `gkd` "
        "(logit distillation from a teacher on the accepted samples), or `dpo` (preference "
        "pairs of accepted vs rejected samples of one seed).",
    )
    schedule: list[ScheduleEntry] | None = Field(
        None,
        description="Per-generation recipes: generation g uses entry g (the last one repeats); "
        "None: `mode` every generation.",
    )
    build_on: Literal["champion", "previous"] = Field(
        "champion",
        description="Which model generation g samples from and trains: the gate's champion, or "
        "generation g-1's trained model even if the gate kept the champion (staged recipes).",
    )
    start_from: Literal["policy", "base"] = Field(
        "policy",
        description="The weights generation g's training starts from: the policy it sampled "
        "from (see build_on), or the base model, retrained each generation on the replayed "
        "accepted set (R1's last SFT: the base on every curated sample); the policy still "
        "samples.",
    )
    learning_rate: float = Field(5e-4, gt=0, description="Peak learning rate.")
    epochs: float = Field(3.0, gt=0, description="Passes over the training set.")
    batch_size: int = Field(64, gt=0, description="Sequences per device step.")
    grad_accum: int = Field(1, gt=0, description="Gradient accumulation steps.")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="Share of steps spent warming up.")
    scheduler: Literal["cosine", "linear", "constant"] = Field("cosine", description="LR shape.")
    max_length: int = Field(256, gt=0, description="Longest training sequence in tokens.")
    replay: bool = Field(
        True, description="Train on every accepted sample so far, not only this generation's."
    )
    replay_share: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="With replay: share of the training set drawn from earlier generations' "
        "accepted samples (None: all of them).",
    )
    bf16: bool = Field(False, description="Train in bfloat16 (GPU).")
    cpu_threads: int | None = Field(
        None, gt=0, description="torch threads when training on CPU (None: the free cores)."
    )
    seed: int = Field(0, description="Training seed.")
    packing: bool = Field(
        False,
        description="SFT: pack several samples per sequence, none attending to another "
        "(V3 sample masking; position ids restart per sample).",
    )
    min_lr_ratio: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="SFT cosine floor as a share of the peak (V3: 1e-6 / 5e-6 = 0.2); None: 0.",
    )
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass (large models)."
    )
    launcher: Literal["local", "accelerate"] = Field(
        "local",
        description="How the training worker starts: `local` (one Python process) or "
        "`accelerate` (`accelerate launch` of num_processes processes, configured by "
        "accelerate_config).",
    )
    num_processes: int = Field(
        1,
        gt=0,
        description="Training processes (one per GPU; on CPU each a gloo rank); more than 1 "
        "needs launcher accelerate. batch_size is per process.",
    )
    accelerate_config: Path | None = Field(
        None,
        description="With launcher accelerate: an accelerate config file, e.g. "
        "configs/accelerate/ddp.yaml (DDP, CPU or GPU), zero3.yaml or fsdp.yaml (GPUs).",
    )
    grpo: GRPOSection = GRPOSection()
    gkd: GKDSection = GKDSection()
    dpo: DPOSection = DPOSection()

    @model_validator(mode="after")
    def _launch(self) -> TrainConfig:
        """A launch that could not run as written stops here: several processes without
        accelerate, accelerate without its file, a file `accelerate launch` would run as one
        process, or DDP of one process (accelerate refuses it)."""
        if self.launcher == "local":
            if self.num_processes != 1 or self.accelerate_config is not None:
                raise ValueError(
                    "train.num_processes > 1 and train.accelerate_config need train.launcher: "
                    f"accelerate (got num_processes={self.num_processes}, "
                    f"accelerate_config={self.accelerate_config})"
                )
            return self
        if self.accelerate_config is None:
            raise ValueError(
                "train.accelerate_config: train.launcher accelerate needs an accelerate config "
                "file, e.g. configs/accelerate/ddp.yaml"
            )
        if accelerate_type(self.accelerate_config) == "MULTI_GPU" and self.num_processes < 2:
            raise ValueError(
                f"train.num_processes: DDP ({self.accelerate_config}) needs at least 2 "
                "processes; one process is train.launcher: local"
            )
        return self

    def stage(self, generation: int) -> ScheduleEntry:
        """The training recipe of `generation` (1-based)."""
        if not self.schedule:
            return ScheduleEntry(mode=self.mode)
        return self.schedule[min(generation, len(self.schedule)) - 1]

    def grpo_rewards(self, generation: int) -> dict[str, float]:
        return self.stage(generation).rewards or self.grpo.rewards

    def sft_learning_rate(self, generation: int) -> float:
        """The peak learning rate of `generation`'s SFT or GKD: its schedule entry's, else
        `learning_rate`."""
        return self.stage(generation).learning_rate or self.learning_rate


class ServedTeacher(Section):
    """A teacher behind an OpenAI-compatible `/completions` endpoint (`vllm serve`, a provider).

    The API key never sits in the config: it is read from the environment variable named by
    `api_key_env` (default: the judge's, FLYWHEEL_API_KEY_ENV or else OPENAI_API_KEY).
    """

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]*$",
        description="Recorded as each sample's model (and in its id); unique among teachers.",
    )
    backend: Literal["openai"] = Field(description="`openai`: an OpenAI-compatible server.")
    base_url: str = Field(
        pattern=r"^https?://\S+$", description="The endpoint's base URL, e.g. http://host:8000/v1."
    )
    model: str = Field(min_length=1, description="The served model's name on that endpoint.")
    api_key_env: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Environment variable holding the API key (None: the judge's default).",
    )


def _teacher_kind(value: object) -> str:
    """A mapping (or a parsed `ServedTeacher`) is a served teacher; anything else a path."""
    return "served" if isinstance(value, dict | ServedTeacher) else "local"


Teacher = Annotated[
    Annotated[Path, Tag("local")] | Annotated[ServedTeacher, Tag("served")],
    Discriminator(_teacher_kind),
]


def teacher_label(teacher: Path | ServedTeacher) -> str:
    """What samples record as their model: a local teacher's path, a served teacher's name."""
    return teacher.name if isinstance(teacher, ServedTeacher) else str(teacher)


class DistillConfig(Section):
    """Where the generation stage's samples come from: the policy, teachers, prompt templates."""

    teachers: list[Teacher] = Field(
        [],
        description="Teachers whose samples are pooled with the policy's: local checkpoint "
        "paths, or served models `{name, backend: openai, base_url, model[, api_key_env]}`.",
    )
    include_policy: bool = Field(
        True, description="Pool the policy's own samples too (False: teachers only)."
    )
    templates: list[str] = Field(
        ["plain"],
        min_length=1,
        description="Prompt templates per seed (tasks.prompts.TEMPLATES: plain, reflect).",
    )

    @model_validator(mode="after")
    def _sources(self) -> DistillConfig:
        from tasks.prompts import TEMPLATES

        unknown = [t for t in self.templates if t not in TEMPLATES]
        if unknown:
            raise ValueError(f"templates: unknown {unknown}; known: {sorted(TEMPLATES)}")
        if len(set(self.templates)) != len(self.templates):
            raise ValueError(f"templates: listed twice in {self.templates}")
        if not self.include_policy and not self.teachers:
            raise ValueError("no generator: include_policy is false and no teachers are given")
        labels = [teacher_label(t) for t in self.teachers]
        twice = sorted({x for x in labels if labels.count(x) > 1})
        if twice:
            raise ValueError(f"teachers: {twice} listed twice (names and paths must be unique)")
        return self
