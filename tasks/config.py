"""The flywheel's configuration: one pydantic model, the parameter type of the `flywheel` flow.

Prefect validates it and renders it as the run form in its UI; YAML files in `configs/` load into
it. Every constraint lives on its field, so a bad value fails before any work starts with an
error that names the field and the rule it broke (`load_config` adds the file name).
Components never take this object whole: the flow hands each one the plain values it needs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class _Section(BaseModel):
    # A misspelt key is an error, not a silently ignored default.
    model_config = ConfigDict(extra="forbid")


class BootstrapConfig(_Section):
    """The tiny Llama policy made from scratch when `model.base` is `bootstrap`."""

    hidden_size: int = Field(128, gt=0, description="Width of the transformer.")
    intermediate_size: int = Field(384, gt=0, description="Width of the MLP.")
    num_layers: int = Field(4, gt=0, description="Number of decoder layers.")
    num_heads: int = Field(2, gt=0, description="Attention heads (head size = width / heads).")
    max_position: int = Field(256, ge=32, description="Longest sequence in tokens.")
    pretrain_steps: int = Field(1200, ge=0, description="Optimizer steps of pretraining.")
    batch_size: int = Field(64, gt=0, description="Sequences per pretraining step.")
    learning_rate: float = Field(3e-3, gt=0, description="Peak pretraining learning rate.")
    max_difficulty: int = Field(3, ge=1, le=5, description="Hardest level in pretraining text.")
    label_smoothing: float = Field(
        0.1, ge=0, lt=1, description="Pretraining label smoothing: a noisier sampler, same greedy."
    )
    seed: int = Field(0, description="Seed for weights and pretraining data.")

    @model_validator(mode="after")
    def _heads_divide_width(self) -> BootstrapConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by "
                f"num_heads ({self.num_heads})"
            )
        return self


class ModelConfig(_Section):
    base: str = Field(
        "bootstrap",
        description="Path of a local Hugging Face checkpoint, or `bootstrap` for the tiny default.",
    )
    chat_template: bool = Field(
        False, description="Wrap prompts in the tokenizer's chat template (real chat models)."
    )
    system_prompt: str | None = Field(None, description="System message when chat_template.")
    prompt_template: str = Field(
        "Q: {question}\n", description="Plain-text prompt; `{question}` is the seed's question."
    )

    @model_validator(mode="after")
    def _template_has_question(self) -> ModelConfig:
        if "{question}" not in self.prompt_template:
            raise ValueError("prompt_template must contain '{question}'")
        return self


class EngineConfig(_Section):
    """Where samples come from. One engine load per stage, in its own process."""

    backend: Literal["vllm", "hf"] = Field(
        "vllm", description="`vllm` (in-process engine) or `hf` (transformers generate)."
    )
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = Field(
        "float32", description="Weights' dtype in the engine (bf16 on GPUs)."
    )
    gpu_memory_utilization: float = Field(
        0.3, gt=0, le=1, description="vLLM's memory share (of the NUMA node's RAM on CPU)."
    )
    max_model_len: int = Field(256, ge=32, description="Longest prompt + completion in tokens.")
    hf_batch_size: int = Field(256, gt=0, description="Prompts per `generate` call (hf backend).")
    enforce_eager: bool = Field(
        True, description="vLLM without compilation/CUDA graphs (faster start on CPU; off on GPU)."
    )


class SamplingConfig(_Section):
    n: int = Field(8, gt=0, le=256, description="Samples per seed.")
    temperature: float = Field(1.0, ge=0, description="Sampling temperature (0 = greedy).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    max_tokens: int = Field(96, gt=0, description="Longest completion in tokens.")
    seed: int = Field(0, description="Sampling seed; with the generation number it fixes output.")


class SeedsConfig(_Section):
    file: Path | None = Field(
        None, description="JSONL seed file (id, question, answer[, difficulty]); else generated."
    )
    count: int = Field(2048, gt=0, description="Seeds per generation.")
    levels: list[int] = Field(
        [1, 2, 2, 3, 3, 3],
        min_length=1,
        description="Difficulty mix of generated seeds; a level listed twice is drawn twice as "
        "often.",
    )
    keep_failed: float = Field(
        0.2, ge=0, le=1, description="Most of next seed set taken by failed or half-solved seeds."
    )
    keep_original: float = Field(
        0.0, ge=0, le=1, description="Share of the next seed set drawn from the first seeds."
    )
    easier_below: float = Field(
        0.02, ge=0, lt=1, description="Mean seed pass rate below which the mix moves a level down."
    )
    harder_above: float = Field(
        0.5, gt=0, le=1, description="Mean seed pass rate above which the mix moves a level up."
    )
    seed: int = Field(1, description="Seed of the seed generator.")

    @model_validator(mode="after")
    def _shares_fit(self) -> SeedsConfig:
        if self.keep_failed + self.keep_original > 1:
            raise ValueError("keep_failed + keep_original must be at most 1")
        if self.easier_below >= self.harder_above:
            raise ValueError("easier_below must be below harder_above")
        if any(not 1 <= level <= 5 for level in self.levels):
            raise ValueError(f"levels must lie in 1..5, got {self.levels}")
        return self


class CurationConfig(_Section):
    rewards: list[str] = Field(
        ["accuracy", "format"], min_length=1, description="Rewards that must all be 1 to accept."
    )
    max_per_seed: int = Field(4, gt=0, description="Most accepted samples kept per seed.")


class TrainConfig(_Section):
    mode: Literal["sft"] = Field("sft", description="Training recipe per generation.")
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
    bf16: bool = Field(False, description="Train in bfloat16 (GPU).")
    cpu_threads: int | None = Field(
        None, gt=0, description="torch threads when training on CPU (None: torch's default)."
    )
    seed: int = Field(0, description="Training seed.")


class EvalConfig(_Section):
    suite_size: int = Field(512, gt=0, description="Items in the frozen held-out suite.")
    k: int = Field(8, gt=0, le=64, description="Samples per item (pass@k, maj@k).")
    temperature: float = Field(1.0, ge=0, description="Sampling temperature for evaluation.")
    max_tokens: int = Field(96, gt=0, description="Longest completion in tokens.")
    seed: int = Field(1234, description="Evaluation sampling seed (fixed across generations).")


class GateConfig(_Section):
    test: Literal["margin", "paired_bootstrap"] = Field(
        "margin",
        description="`margin`: challenger's metric must beat the champion's by more than margin; "
        "`paired_bootstrap`: the lower confidence bound of the paired per-item gain must, and no "
        "guard metric may regress.",
    )
    metric: Literal["pass@1", "pass@k", "maj@k"] = Field("pass@1", description="What decides.")
    margin: float = Field(0.0, ge=0, le=1, description="Challenger must beat champion by more.")
    alpha: float = Field(0.05, gt=0, lt=0.5, description="One-sided level of the lower bound.")
    n_boot: int = Field(2000, ge=100, description="Bootstrap replicates.")
    seed: int = Field(0, description="Bootstrap seed.")
    guards: dict[Literal["format_rate", "mean_tokens", "truncation_rate"], float] = Field(
        default_factory=lambda: {"format_rate": 0.02, "mean_tokens": 0.25, "truncation_rate": 0.02},
        description="Largest allowed regression per guard (mean_tokens relative); {} turns "
        "guards off. Used by paired_bootstrap.",
    )

    @model_validator(mode="after")
    def _guards_non_negative(self) -> GateConfig:
        bad = {k: v for k, v in self.guards.items() if v < 0}
        if bad:
            raise ValueError(f"guards must be >= 0, got {bad}")
        return self


class JudgeConfig(_Section):
    """The generative judge: used in curation when `judge` is one of `curation.rewards`."""

    rubric: str = Field(
        "arith_v1", description="Rubric name under configs/judges/ (or a path to a rubric file)."
    )
    model: str = Field(
        "bootstrap", description="Judge checkpoint path, or `bootstrap` for the tiny default."
    )
    backend: Literal["vllm", "hf", "openai"] = Field(
        "vllm", description="Judge backend; `openai`: an OpenAI-compatible server (model = name)."
    )
    k: int = Field(3, gt=0, le=32, description="Judge samples per candidate (majority vote).")
    temperature: float = Field(1.0, ge=0, description="Judge sampling temperature.")
    max_tokens: int = Field(48, gt=0, description="Longest judge output in tokens.")
    max_candidate_chars: int = Field(
        160, gt=0, description="Candidate text beyond this is cut before judging."
    )
    max_error_share: float = Field(
        0.5, ge=0, lt=1, description="Share of unparsable votes above which a vote is infra_error."
    )
    combine: Literal["rules_then_judge", "both", "judge_only"] = Field(
        "rules_then_judge",
        description="`rules_then_judge`: rules where the sample has a gold answer, judge for the "
        "rest; `both`: rules and judge must accept; `judge_only`: the judge decides.",
    )
    max_model_len: int = Field(384, ge=32, description="Judge prompt + output in tokens.")
    seed: int = Field(0, description="Judge sampling and nonce seed.")
    steps: int = Field(400, ge=0, description="Pretraining steps of the bootstrap judge.")
    batch_size: int = Field(32, gt=0, description="Documents per bootstrap-judge step.")


class TrackingConfig(_Section):
    enabled: bool = Field(True, description="Record runs in MLflow.")
    experiment: str | None = Field(None, description="MLflow experiment; default: the name.")
    registered_model: str | None = Field(None, description="Registry name; default: the name.")


class FlywheelConfig(_Section):
    """Everything one flywheel needs. Defaults are the embedded CPU demo."""

    name: str = Field(
        "demo", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Flywheel name (folder)."
    )
    domain: Literal["arith"] = Field("arith", description="Built-in task domain.")
    generations: int = Field(3, gt=0, description="Generations this run goes up to.")
    runs_dir: Path = Field(Path("runs"), description="Where generations and MLflow live.")
    model: ModelConfig = ModelConfig()
    bootstrap: BootstrapConfig = BootstrapConfig()
    engine: EngineConfig = EngineConfig()
    sampling: SamplingConfig = SamplingConfig()
    seeds: SeedsConfig = SeedsConfig()
    curation: CurationConfig = CurationConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    gate: GateConfig = GateConfig()
    judge: JudgeConfig = JudgeConfig()
    tracking: TrackingConfig = TrackingConfig()

    @model_validator(mode="after")
    def _rewards_known(self) -> FlywheelConfig:
        from tasks.rewards import REWARDS

        unknown = [r for r in self.curation.rewards if r not in REWARDS]
        if unknown:
            raise ValueError(
                f"curation.rewards: unknown reward(s) {unknown}; known: {sorted(REWARDS)}"
            )
        return self

    @property
    def flywheel_dir(self) -> Path:
        return self.runs_dir / self.name

    def resolved_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True)


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file, field and rule."""


def format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"  {loc}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def load_config(path: str | Path, **overrides: object) -> FlywheelConfig:
    """Read a YAML config, apply dotted overrides (`sampling.n=4`), validate."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    try:
        return FlywheelConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, str(path))) from None
