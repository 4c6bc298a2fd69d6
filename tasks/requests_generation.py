"""Requests for generation and judging: engine, sampling and prompt specs, the generate and
judge workers' requests, the two bootstraps'; one builder each from the config (see
`tasks.requests`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from tasks.config import FlywheelConfig, ServedTeacher


@dataclasses.dataclass(frozen=True)
class EngineSpec:
    """Which backend samples and how its engine is set up (`engine.*`; the judge's backend and
    context are `judge.backend` and `judge.max_model_len`). A served model (backend `openai`)
    is reached at `base_url` with the key in the variable `api_key_env` names (None: the
    environment's, `tasks.backends.HttpSettings`); the in-process backends ignore those two,
    the served one ignores the engine's own knobs. `cpu_threads`: the torch threads of a worker
    generating with `hf` (None: the free cores, `tasks.threads`). The `ray_*` fields and
    `replicas` are the `ray` backend's (`tasks.backend_ray`); `tensor_parallel_size` is every
    vLLM engine's; `multiprocessing` the in-process vLLM engine's (`tasks.backends`)."""

    backend: str
    dtype: str
    gpu_memory_utilization: float
    max_model_len: int
    hf_batch_size: int
    enforce_eager: bool
    base_url: str | None
    api_key_env: str | None
    cpu_threads: int | None
    multiprocessing: bool | None
    tensor_parallel_size: int
    ray_address: str | None
    replicas: int
    ray_num_cpus: float
    ray_num_gpus: float
    ray_batch_size: int
    ray_timeout_s: float


@dataclasses.dataclass(frozen=True)
class SamplingSpec:
    """How each prompt is sampled: `n` samples (the judge's `k`, the eval's `k`), each prompt
    seeded from `seed` and its own text (`tasks.prompts.prompt_seed`). Its JSON is the `params`
    dict that sample ids hash and manifests record."""

    n: int
    temperature: float
    top_p: float
    max_tokens: int
    seed: int


@dataclasses.dataclass(frozen=True)
class PromptSpec:
    """How a question becomes the model's prompt (`model.*`)."""

    prompt_template: str
    chat_template: bool
    system_prompt: str | None


@dataclasses.dataclass(frozen=True)
class GeneratePass:
    """One more sampling of the same questions on the engine already loaded (the eval's greedy
    pass beside its k samples: one engine start instead of two), into its own file."""

    sampling: SamplingSpec
    out_file: str


@dataclasses.dataclass(frozen=True)
class GenerateRequest:
    """One generate worker run (`tasks.generate`): `model_path` (a served model's name on its
    server) samples every question of `questions_file` into `out_file`. `template` (a
    `tasks.prompts.TEMPLATES` name) is applied to the prompt this model sees; `student_model`'s
    tokenizer renders the plain `train_prompt` (None: this model's). `hint`: STaR's
    rationalization hint (`sampling.rationalize.hint`), shown to this model with each
    question's gold answer (the questions file's `answer` column) and never part of
    `train_prompt`; None: no hint. `warmup` runs one untimed short call first (benchmarks).
    `also`: further passes on the same engine, each into its own file."""

    model_path: str
    engine: EngineSpec
    sampling: SamplingSpec
    prompt: PromptSpec
    template: str
    hint: str | None
    student_model: str | None
    questions_file: str
    out_file: str
    also: list[GeneratePass]
    progress: bool
    warmup: bool


@dataclasses.dataclass(frozen=True)
class JudgeSettings:
    """The judge as configured (`judge.*`): its checkpoint (or served name), rubric, engine and
    sampling (`n` votes per candidate; `seed` also draws the per-prompt nonces), the candidate
    cut and the vote's error share."""

    model_path: str
    rubric: str
    engine: EngineSpec
    sampling: SamplingSpec
    max_candidate_chars: int
    max_error_share: float
    progress: bool


@dataclasses.dataclass(frozen=True)
class JudgeRequest:
    """One judge worker run (`tasks.judge_run`): every candidate of `candidates_file`
    (question, completion) judged, one vote row per candidate written to `out_file`."""

    judge: JudgeSettings
    candidates_file: str
    out_file: str


@dataclasses.dataclass(frozen=True)
class BootstrapRequest:
    """The embedded base policy's recipe (`bootstrap.*`, `model.prompt_template`, `domain`),
    made under `out_root` (`tasks.bootstrap`); `exclude`: the questions pretraining never shows
    (the frozen suite's); `cpu_threads`: the worker's torch threads (`bootstrap.cpu_threads`,
    None: the free cores; not part of the recipe)."""

    out_root: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    max_position: int
    pretrain_steps: int
    batch_size: int
    learning_rate: float
    max_difficulty: int
    seed: int
    label_smoothing: float
    prompt_template: str
    domain: str
    exclude: list[str]
    progress: bool
    cpu_threads: int | None


@dataclasses.dataclass(frozen=True)
class PolicySampling:
    """How the base policy is sampled for the judge's training pool: the flywheel's own
    generation settings (`sampling`, `model`, `engine`), so the pool is what curation sees.
    Its JSON joins the judge's cache key: the fields and their names stay as they are."""

    temperature: float
    top_p: float
    max_tokens: int
    prompt_template: str
    chat_template: bool
    system_prompt: str | None
    max_model_len: int
    dtype: str
    hf_batch_size: int


@dataclasses.dataclass(frozen=True)
class JudgeBootstrapRequest:
    """The embedded judge's recipe (`judge.*`, `domain`), made under `out_root`
    (`tasks.judge_bootstrap`). With `policy_samples` > 0 it also trains on that many samples
    of the checkpoint `policy`, drawn with `policy_sampling`; with 0 both are None.
    `cpu_threads`: the worker's torch threads (`bootstrap.cpu_threads`, as the policy's)."""

    out_root: str
    rubric: str
    max_position: int
    steps: int
    batch_size: int
    max_candidate_chars: int
    seed: int
    domain: str
    exclude: list[str]
    policy: str | None
    policy_samples: int
    policy_sampling: PolicySampling | None
    progress: bool
    cpu_threads: int | None


def engine_spec(cfg: FlywheelConfig) -> EngineSpec:
    """The policy's engine (`engine.*`), also every local teacher's."""
    e = cfg.engine
    return EngineSpec(
        backend=e.backend,
        dtype=e.dtype,
        gpu_memory_utilization=e.gpu_memory_utilization,
        max_model_len=e.max_model_len,
        hf_batch_size=e.hf_batch_size,
        enforce_eager=e.enforce_eager,
        base_url=None,
        api_key_env=None,
        cpu_threads=e.cpu_threads,
        multiprocessing=e.multiprocessing,
        tensor_parallel_size=e.tensor_parallel_size,
        ray_address=e.ray_address,
        replicas=e.replicas,
        ray_num_cpus=e.ray_num_cpus,
        ray_num_gpus=e.ray_num_gpus,
        ray_batch_size=e.ray_batch_size,
        ray_timeout_s=e.ray_timeout_s,
    )


def served_engine(cfg: FlywheelConfig, teacher: ServedTeacher) -> EngineSpec:
    """A served teacher's endpoint (`distill.teachers[i]`) on the policy's engine settings."""
    return dataclasses.replace(
        engine_spec(cfg),
        backend=teacher.backend,
        base_url=teacher.base_url,
        api_key_env=teacher.api_key_env,
    )


def prompt_spec(cfg: FlywheelConfig) -> PromptSpec:
    """The policy's prompt format (`model.*`)."""
    m = cfg.model
    return PromptSpec(
        prompt_template=m.prompt_template,
        chat_template=m.chat_template,
        system_prompt=m.system_prompt,
    )


def problem_prompt(cfg: FlywheelConfig) -> PromptSpec:
    """The seeds stage's rewrite and propose prompts: its templates are the whole prompt."""
    return dataclasses.replace(prompt_spec(cfg), prompt_template="{question}")


def sampling_spec(cfg: FlywheelConfig, generation: int) -> SamplingSpec:
    """A generation's sampling (`sampling.*`), its seed offset by the generation number."""
    s = cfg.sampling
    return SamplingSpec(
        n=s.n,
        temperature=s.temperature,
        top_p=s.top_p,
        max_tokens=s.max_tokens,
        seed=s.seed + generation,
    )


def problem_sampling(cfg: FlywheelConfig, generation: int) -> SamplingSpec:
    """The generation's sampling with `seeds.model_samples` per rewrite or propose prompt."""
    return dataclasses.replace(sampling_spec(cfg, generation), n=cfg.seeds.model_samples)


def rationalize_sampling(cfg: FlywheelConfig, generation: int) -> SamplingSpec:
    """The generation's sampling with `sampling.rationalize.n` per failed seed (hinted)."""
    return dataclasses.replace(sampling_spec(cfg, generation), n=cfg.sampling.rationalize.n)


def eval_sampling(cfg: FlywheelConfig) -> SamplingSpec:
    """The frozen suite's sampling (`eval.*`): k samples per item, a fixed seed."""
    e = cfg.eval
    return SamplingSpec(
        n=e.k, temperature=e.temperature, top_p=1.0, max_tokens=e.max_tokens, seed=e.seed
    )


def greedy_sampling(cfg: FlywheelConfig) -> SamplingSpec:
    """The eval's greedy pass (`eval.greedy`): one sample per item at temperature 0."""
    return dataclasses.replace(eval_sampling(cfg), n=1, temperature=0.0)


def generate_request(
    cfg: FlywheelConfig,
    model_path: str,
    sampling: SamplingSpec,
    questions_file: Path,
    out_file: Path,
    *,
    engine: EngineSpec | None = None,
    prompt: PromptSpec | None = None,
    template: str = "plain",
    student_model: str | None = None,
    hint: str | None = None,
    also: Sequence[tuple[SamplingSpec, Path]] = (),
) -> GenerateRequest:
    """A generate worker run of `model_path` on the policy's engine and prompt format unless
    `engine` (a served teacher's) or `prompt` (the seeds stage's) is given; `hint`: the
    rationalization hint (the questions file then holds answers); `also`: (sampling, file) of
    each further pass on the same engine."""
    return GenerateRequest(
        model_path=str(model_path),
        engine=engine or engine_spec(cfg),
        sampling=sampling,
        prompt=prompt or prompt_spec(cfg),
        template=template,
        hint=hint,
        student_model=student_model,
        questions_file=str(questions_file),
        out_file=str(out_file),
        also=[GeneratePass(sampling=s, out_file=str(f)) for s, f in also],
        progress=True,
        warmup=False,
    )


def judge_settings(
    cfg: FlywheelConfig, model_path: str, seed: int, *, progress: bool = True
) -> JudgeSettings:
    """The judge worker's settings (`judge.*`, the engine's dtype, memory, batch and Ray
    settings) for the curate stage and the judge benchmarks alike; `seed` is the run's
    (curation: the judge's seed plus the generation)."""
    j = cfg.judge
    return JudgeSettings(
        model_path=str(model_path),
        rubric=j.rubric,
        engine=dataclasses.replace(
            engine_spec(cfg), backend=j.backend, max_model_len=j.max_model_len
        ),
        sampling=SamplingSpec(
            n=j.k, temperature=j.temperature, top_p=1.0, max_tokens=j.max_tokens, seed=seed
        ),
        max_candidate_chars=j.candidate_chars(),
        max_error_share=j.max_error_share,
        progress=progress,
    )


def bootstrap_request(cfg: FlywheelConfig, exclude: list[str]) -> BootstrapRequest:
    """The embedded base policy's worker request; `exclude`: the frozen suite's questions."""
    b = cfg.bootstrap
    return BootstrapRequest(
        out_root=str(cfg.runs_dir / "models"),
        hidden_size=b.hidden_size,
        intermediate_size=b.intermediate_size,
        num_layers=b.num_layers,
        num_heads=b.num_heads,
        max_position=b.max_position,
        pretrain_steps=b.pretrain_steps,
        batch_size=b.batch_size,
        learning_rate=b.learning_rate,
        max_difficulty=b.max_difficulty,
        seed=b.seed,
        label_smoothing=b.label_smoothing,
        prompt_template=cfg.model.prompt_template,
        domain=cfg.domain,
        exclude=sorted(exclude),
        progress=True,
        cpu_threads=b.cpu_threads,
    )


def policy_sampling(cfg: FlywheelConfig) -> PolicySampling:
    """The flywheel's own generation settings, for the judge's policy-sample pool."""
    s, m, e = cfg.sampling, cfg.model, cfg.engine
    return PolicySampling(
        temperature=s.temperature,
        top_p=s.top_p,
        max_tokens=s.max_tokens,
        prompt_template=m.prompt_template,
        chat_template=m.chat_template,
        system_prompt=m.system_prompt,
        max_model_len=e.max_model_len,
        dtype=e.dtype,
        hf_batch_size=e.hf_batch_size,
    )


def judge_bootstrap_request(
    cfg: FlywheelConfig, exclude: list[str], policy: str | None
) -> JudgeBootstrapRequest:
    """The embedded judge's worker request; `exclude`: the frozen suite's questions; `policy`:
    the base policy's checkpoint, needed when `judge.policy_samples` > 0 (its samples are drawn
    with the flywheel's own settings, so the judge trains on what curation will show it)."""
    j = cfg.judge
    if j.policy_samples and policy is None:
        raise ValueError("judge.policy_samples > 0 needs the base policy's checkpoint")
    return JudgeBootstrapRequest(
        out_root=str(cfg.runs_dir / "models"),
        rubric=j.rubric,
        max_position=j.max_model_len,
        steps=j.steps,
        batch_size=j.batch_size,
        max_candidate_chars=j.candidate_chars(),
        seed=j.seed,
        domain=cfg.domain,
        exclude=sorted(exclude),
        policy=str(policy) if j.policy_samples else None,
        policy_samples=j.policy_samples,
        policy_sampling=policy_sampling(cfg) if j.policy_samples else None,
        progress=True,
        cpu_threads=cfg.bootstrap.cpu_threads,
    )
