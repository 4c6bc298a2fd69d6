"""The flywheel's configuration: one pydantic model, the parameter type of the `flywheel` flow.

Prefect validates it and renders it as the run form in its UI; YAML files in `configs/` load into
it. Every constraint lives on its field, so a bad value fails before any work starts with an
error that names the field and the rule it broke (`load_config` adds the file name).
Only the flows and the stages (`tasks/stages/`) take this object whole. Below them, workers get
a typed request built once from it (`tasks.requests`) and pure functions get the plain values
they need, so no other module under `tasks/` imports this one (`tests/unit/test_import_purity.py`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)


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
        None,
        description="Seed file, JSONL / Parquet / CSV (id, question, answer[, difficulty]); "
        "else generated.",
    )
    data_dirs: list[Path] = Field(
        [Path("data")],
        min_length=1,
        description="Folders a seed file must lie in (resolved; `..` and links out are refused).",
    )
    on_bad_row: Literal["fail", "skip"] = Field(
        "fail", description="A bad seed-file row stops the run (`fail`) or is dropped and reported."
    )
    max_chars: int = Field(
        4096, gt=0, le=1_000_000, description="Longest question or answer in a seed file."
    )
    suite_file_share: float = Field(
        0.5,
        gt=0,
        le=1,
        description="A seed file with at least this share of eval-suite items is refused as one.",
    )
    count: int = Field(2048, gt=0, description="Seeds per generation.")
    levels: list[int] = Field(
        [1, 2, 2, 3, 3, 3],
        min_length=1,
        description="Difficulty mix of generation 1's generated seeds (a level listed twice is "
        "drawn twice as often); later the curriculum sets it.",
    )
    sources: dict[Literal["generator", "failures", "mutations", "rewrites", "proposed"], float] = (
        Field(
            default_factory=lambda: {"generator": 0.6, "failures": 0.2, "mutations": 0.2},
            description="From generation 2: weight of each seed source (generator, failures, "
            "mutations, rewrites, proposed); a source that comes up short is filled by the "
            "generator.",
        )
    )
    keep_original: float = Field(
        0.1, ge=0, le=1, description="Share of every later seed set drawn from the first seeds."
    )
    failure_below: float = Field(
        0.5, ge=0, lt=1, description="A seed with pass rate at or below this counts as failed."
    )
    curriculum_floor: float = Field(
        0.02,
        gt=0,
        le=1,
        description="Added to every level's p(1-p) weight, so no level or seed vanishes.",
    )
    rewrite_template: str = Field(
        "Q: {prefix}",
        description="Prompt asking the policy to rewrite a failure ({question}, {prefix}, {head}).",
    )
    propose_template: str = Field(
        "Q: {head}",
        description="Prompt asking the policy for a new problem, from a solved example "
        "({question}, {prefix}, {head}).",
    )
    problem_marker: str = Field(
        "Q: ", min_length=1, description="The model's problem is what follows this, to line end."
    )
    model_samples: int = Field(
        4, gt=0, le=64, description="Samples per rewrite/proposal prompt (one engine load)."
    )
    oversample: float = Field(
        3.0, ge=1, description="Model problems asked for per one needed (many fail the check)."
    )
    seed: int = Field(1, description="Seed of the seed generator.")

    @model_validator(mode="after")
    def _shares_fit(self) -> SeedsConfig:
        bad = {k: v for k, v in self.sources.items() if v < 0}
        if bad or not any(v > 0 for v in self.sources.values()):
            raise ValueError(f"sources: weights must be >= 0 with one above 0, got {self.sources}")
        if any(not 1 <= level <= 5 for level in self.levels):
            raise ValueError(f"levels must lie in 1..5, got {self.levels}")
        return self


class CurationConfig(_Section):
    rewards: list[str] = Field(
        ["accuracy", "format"], min_length=1, description="Rewards that must all be 1 to accept."
    )
    max_per_seed: int = Field(4, gt=0, description="Most accepted samples kept per seed.")
    reward_model: Path | None = Field(
        None,
        description="Reward-model folder (`flywheel train-rm` writes <runs_dir>/<name>/"
        "reward-model); needed when `rm` is one of the rewards.",
    )
    length_buffer: int = Field(
        128,
        gt=0,
        description="`length` reward: soft-penalty zone before sampling.max_tokens; a completion "
        "longer than max_tokens - length_buffer is rejected as overlong.",
    )
    repetition_ngram: int = Field(3, gt=0, description="`repetition` reward: n-gram size.")

    @model_validator(mode="after")
    def _rm_has_model(self) -> CurationConfig:
        if "rm" in self.rewards and self.reward_model is None:
            raise ValueError(
                "reward_model: required when `rm` is one of curation.rewards (the folder "
                "`flywheel train-rm` writes, e.g. runs/<name>/reward-model)"
            )
        return self


TrainMode = Literal["sft", "grpo", "sft_then_grpo", "gkd"]

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


class GKDSection(_Section):
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


class GRPOSection(_Section):
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

    _rewards_callable = field_validator("rewards")(_grpo_callable)

    @model_validator(mode="after")
    def _buffer_fits(self) -> GRPOSection:
        if self.length_buffer > self.max_completion_length:
            raise ValueError("length_buffer must not exceed max_completion_length")
        return self


class ScheduleEntry(_Section):
    """One generation's training in a schedule (e.g. one stage of the R1 recipe)."""

    mode: TrainMode = Field(description="Training recipe of this generation.")
    label: str | None = Field(None, description="Name of the stage, shown in the run's tags.")
    rewards: dict[str, float] | None = Field(
        None, description="GRPO rewards and weights for this generation (None: train.grpo's)."
    )

    _rewards_callable = field_validator("rewards")(_grpo_callable)


class TrainConfig(_Section):
    mode: TrainMode = Field(
        "sft",
        description="Training recipe per generation: `sft` on accepted samples, `grpo` on the "
        "seeds, `sft_then_grpo` (GRPO starting from this generation's SFT model), or `gkd` "
        "(logit distillation from a teacher on the accepted samples).",
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
        None, gt=0, description="torch threads when training on CPU (None: torch's default)."
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
    grpo: GRPOSection = GRPOSection()
    gkd: GKDSection = GKDSection()

    def stage(self, generation: int) -> ScheduleEntry:
        """The training recipe of `generation` (1-based)."""
        if not self.schedule:
            return ScheduleEntry(mode=self.mode)
        return self.schedule[min(generation, len(self.schedule)) - 1]

    def grpo_rewards(self, generation: int) -> dict[str, float]:
        return self.stage(generation).rewards or self.grpo.rewards


class ServedTeacher(_Section):
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


class DistillConfig(_Section):
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


class GuardSuite(_Section):
    """An extra frozen suite whose pass@1 the challenger may not lose (a gate guard)."""

    levels: list[int] = Field(min_length=1, description="Difficulty levels it draws from.")
    size: int = Field(128, gt=0, description="Items in the suite.")
    max_drop: float = Field(
        0.02, ge=0, le=1, description="Largest allowed pass@1 drop against the champion."
    )


class EvalConfig(_Section):
    """The frozen evaluation. k, temperature, max_tokens and seed are frozen with the suite on
    a flywheel's first run: a later run that changes one is refused (per-item results sampled
    differently do not pair in the gate)."""

    suite_size: int = Field(512, gt=0, description="Items in the frozen held-out suite.")
    k: int = Field(8, gt=0, le=64, description="Samples per item (pass@k, maj@k).")
    temperature: float = Field(1.0, ge=0, description="Sampling temperature for evaluation.")
    max_tokens: int = Field(96, gt=0, description="Longest completion in tokens.")
    seed: int = Field(1234, description="Evaluation sampling seed (fixed across generations).")
    greedy: bool = Field(
        True,
        description="Also score one greedy sample (T=0, same suite and max_tokens) per item: "
        "the `greedy_pass@1` metric and the gate's greedy guard. Costs a second engine start.",
    )
    extra_suites: dict[str, GuardSuite] = Field(
        default_factory=dict,
        description="Named extra suites (e.g. `hard: {levels: [5]}`), frozen with the main one and "
        "evaluated with it; a pass@1 drop past max_drop blocks promotion.",
    )

    @model_validator(mode="after")
    def _suite_names(self) -> EvalConfig:
        bad = [n for n in self.extra_suites if not re.fullmatch(r"[a-z0-9_]+", n)]
        if bad:
            raise ValueError(f"extra_suites names must be lowercase letters, digits, _: {bad}")
        return self


class GateConfig(_Section):
    test: Literal["margin", "paired_bootstrap"] = Field(
        "paired_bootstrap",
        description="`paired_bootstrap` (default): the one-sided (1 - alpha) lower bound of the "
        "paired per-item gain must beat margin, and no guard metric may regress; `margin` "
        "(opt-in): the challenger's point estimate must beat the champion's by more than margin "
        "(with margin 0 it promotes an equal challenger about half the time).",
    )
    metric: Literal["pass@1", "pass@k", "maj@k"] = Field("pass@1", description="What decides.")
    margin: float = Field(0.0, ge=0, le=1, description="Challenger must beat champion by more.")
    alpha: float = Field(
        0.05,
        gt=0,
        lt=0.5,
        description="One-sided level of the gain's lower bound (and the greedy guard's upper one).",
    )
    n_boot: int = Field(2000, ge=100, description="Bootstrap replicates.")
    seed: int = Field(0, description="Bootstrap seed.")
    guards: dict[Literal["format_rate", "mean_tokens", "truncation_rate"], float] = Field(
        default_factory=lambda: {"format_rate": 0.02, "mean_tokens": 0.25, "truncation_rate": 0.02},
        description="Largest allowed regression per guard (mean_tokens relative); {} turns "
        "guards off. Used by paired_bootstrap.",
    )
    greedy_tolerance: float = Field(
        0.02,
        ge=0,
        le=1,
        description="Greedy guard (both tests; needs eval.greedy): block promotion when the "
        "challenger's greedy pass@1 falls by more than this AND the paired bootstrap (1 - alpha) "
        "upper bound of its change is below 0. Skipped, with a note, when either eval has no "
        "greedy results.",
    )

    approval: bool = Field(
        False,
        description="Pause for a person's approval (Prefect UI input) before a promotion the "
        "test allows; a refusal keeps the champion.",
    )
    approval_timeout: int = Field(
        86400,
        gt=0,
        description="Seconds to wait for the approval; then the run fails and a rerun asks again.",
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
    temperature: float = Field(
        0.3, ge=0, description="Judge sampling temperature (0.3: a k-vote of near-greedy reads)."
    )
    max_tokens: int = Field(96, gt=0, description="Longest judge output in tokens.")
    max_candidate_chars: int | None = Field(
        None,
        gt=0,
        description="Candidate text beyond this is cut before judging (None: 160 for the "
        "bootstrap judge, else derived from max_model_len - max_tokens; see candidate_chars).",
    )
    max_error_share: float = Field(
        0.5, ge=0, lt=1, description="Share of unparsable votes above which a vote is infra_error."
    )
    combine: Literal["rules_then_judge", "both", "judge_only"] = Field(
        "rules_then_judge",
        description="How the answer check and the judge combine: `rules_then_judge`: the "
        "accuracy rule where the sample has a gold answer, the judge for the rest; `both`: "
        "both must accept; `judge_only`: the judge alone checks the answer. Every other rule "
        "(format, truncation, length, repetition, ...) rejects in every mode.",
    )
    max_model_len: int = Field(384, ge=32, description="Judge prompt + output in tokens.")
    seed: int = Field(0, description="Judge sampling and nonce seed.")
    steps: int = Field(1200, ge=0, description="Pretraining steps of the bootstrap judge.")
    batch_size: int = Field(32, gt=0, description="Documents per bootstrap-judge step.")
    policy_samples: int = Field(
        2048,
        ge=0,
        description="Base-policy samples on training questions, labelled by the rules, that the "
        "bootstrap judge also trains on (0: synthetic corruptions only).",
    )
    qc_sample: int | None = Field(
        None,
        gt=0,
        description="Candidates per generation judged only to measure the judge (QC), a seeded "
        "random draw (judge.seed + generation) among those whose verdict the rules decide; the "
        "judge always sees every candidate it decides (None: judge every candidate).",
    )

    def candidate_chars(self) -> int:
        """The candidate cut in characters: `max_candidate_chars`, or derived from the judge's
        context when unset (`tasks.judge.candidate_char_limit`)."""
        from tasks.judge import candidate_char_limit, load_rubric

        return candidate_char_limit(
            self.max_candidate_chars,
            embedded=self.model == "bootstrap" and self.backend != "openai",
            max_model_len=self.max_model_len,
            max_tokens=self.max_tokens,
            template=load_rubric(self.rubric).template,
        )


class HygieneConfig(_Section):
    """Decontamination against the eval suite, dedup, and the collapse alarm."""

    ngram: int = Field(8, ge=2, description="Token n-gram size of the contamination check.")
    ngram_min_tokens: int = Field(
        5, ge=1, description="Eval items shorter than this (tokens) are matched exactly only."
    )
    ngram_threshold: float = Field(
        0.5, gt=0, le=1, description="Share of an eval item's n-grams in a seed that drops it."
    )
    near_dup: float | None = Field(
        0.9, gt=0, le=1, description="MinHash Jaccard at which two texts are one (None: off)."
    )
    shingle: int = Field(5, ge=1, description="Character shingle size for MinHash.")
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations.")
    collapse_max_drop: dict[
        Literal["distinct_1", "distinct_2", "self_similarity", "answer_entropy", "mean_length"],
        float,
    ] = Field(
        # Sharpening alone lowers distinct-2 a lot: on the demo, the generation that doubled
        # pass@1 (5.6 % -> 11.2 %) lost 47 % of it, so a 30 % limit blocked real progress.
        default_factory=lambda: {"distinct_2": 0.6, "answer_entropy": 0.3},
        description="Largest relative drop (self_similarity: rise) of a diversity metric of the "
        "challenger's eval completions vs the champion's; beyond it the gate blocks promotion.",
    )

    @model_validator(mode="after")
    def _drops_positive(self) -> HygieneConfig:
        bad = {k: v for k, v in self.collapse_max_drop.items() if v <= 0}
        if bad:
            raise ValueError(f"collapse_max_drop limits must be > 0, got {bad}")
        return self


class TrackingConfig(_Section):
    enabled: bool = Field(True, description="Record runs in MLflow.")
    experiment: str | None = Field(None, description="MLflow experiment; default: the name.")
    registered_model: str | None = Field(None, description="Registry name; default: the name.")


class FlywheelConfig(_Section):
    """Everything one flywheel needs. Defaults are the embedded CPU demo."""

    name: str = Field(
        "demo", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Flywheel name (folder)."
    )
    domain: Literal["arith", "math"] = Field("arith", description="Built-in task domain.")
    generations: int = Field(3, gt=0, description="Generations this run goes up to.")
    runs_dir: Path = Field(Path("runs"), description="Where generations and MLflow live.")
    model: ModelConfig = ModelConfig()
    bootstrap: BootstrapConfig = BootstrapConfig()
    engine: EngineConfig = EngineConfig()
    sampling: SamplingConfig = SamplingConfig()
    seeds: SeedsConfig = SeedsConfig()
    curation: CurationConfig = CurationConfig()
    train: TrainConfig = TrainConfig()
    distill: DistillConfig = DistillConfig()
    eval: EvalConfig = EvalConfig()
    gate: GateConfig = GateConfig()
    judge: JudgeConfig = JudgeConfig()
    tracking: TrackingConfig = TrackingConfig()
    hygiene: HygieneConfig = HygieneConfig()

    @model_validator(mode="after")
    def _rewards_known(self) -> FlywheelConfig:
        from tasks.rewards import REWARDS

        unknown = [r for r in self.curation.rewards if r not in REWARDS]
        if unknown:
            raise ValueError(
                f"curation.rewards: unknown reward(s) {unknown}; known: {sorted(REWARDS)}"
            )
        grpo_sets = {"train.grpo.rewards": self.train.grpo.rewards} | {
            f"train.schedule.{i}.rewards": e.rewards
            for i, e in enumerate(self.train.schedule or [])
            if e.rewards is not None
        }
        modes = {self.train.mode} | {e.mode for e in self.train.schedule or []}
        if "gkd" in modes and self.train.gkd.teacher is None:
            if not self.distill.teachers:
                raise ValueError("train mode gkd needs train.gkd.teacher or distill.teachers")
            if isinstance(self.distill.teachers[0], ServedTeacher):
                raise ValueError(
                    "train.gkd.teacher: GKD needs a local teacher's logits, and "
                    "distill.teachers[0] is a served model; set train.gkd.teacher to a checkpoint"
                )
        served = [t.name for t in self.distill.teachers if isinstance(t, ServedTeacher)]
        if served and self.model.chat_template:
            raise ValueError(
                f"distill.teachers: served teachers {served} take plain-text prompts "
                "(/completions), but model.chat_template is true"
            )
        for where, rewards in grpo_sets.items():
            unknown = [r for r in rewards if r not in REWARDS]
            if unknown or not rewards:
                raise ValueError(
                    f"{where}: unknown or no reward(s) {unknown}; known: {sorted(REWARDS)}"
                )
        return self

    @model_validator(mode="after")
    def _length_buffer_fits(self) -> FlywheelConfig:
        """Curation's `length` reward measures against sampling.max_tokens."""
        c = self.curation
        if "length" in c.rewards and c.length_buffer > self.sampling.max_tokens:
            raise ValueError(
                f"curation.length_buffer ({c.length_buffer}) must not exceed sampling.max_tokens "
                f"({self.sampling.max_tokens}) when `length` is one of curation.rewards"
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
