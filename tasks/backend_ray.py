"""The `ray` generation backend: vLLM engine replicas under Ray Data (`ray.data.llm`).

The worker that calls it (the generate or the judge worker, unchanged) is the Ray driver: it
joins the cluster at `engine.ray_address`, or starts a local Ray for the pass and stops it
after. It tokenizes the prompts itself, as the in-process backend does, and hands Ray Data one
row per sample; `engine.replicas` vLLM engines, each of `tensor_parallel_size` ranks reserving
`ray_num_cpus` / `ray_num_gpus`, sample the rows in batches of `ray_batch_size`; the rows come
back to the driver, which returns them as every backend does, so the worker writes the same
Parquet rows as with `vllm`. Moving to GPU nodes changes those values only.

Identical samples. The in-process engine draws a prompt's n samples as one request of seed s
(`tasks.prompts.prompt_seed`), and vLLM seeds its sample j with s + j. Ray Data's engine stage
keeps only a request's first output, so each prompt becomes n rows of n=1 seeded s .. s+n-1:
the same samples, whichever replica and batch draw them. A replica that dies mid-pass is
restarted by Ray and its batch drawn again from the same seeds, so the set stays whole and
the same.

Where it departs from `ray.data.llm`'s defaults, and why:
- no chat-template, tokenize or detokenize stages: the driver tokenizes (the in-process
  truncation, `tasks.prompts.encode_prompts`) and vLLM detokenizes (the in-process text);
- a fixed pool of `replicas` engine actors, each rank's resources in a placement bundle
  (Ray Data's default asks a GPU per rank, which a CPU node never grants: it would wait), and
  no reservation for the row-copying stages around them (see `generate_ray`);
- finish reasons from the last token: Ray's rows carry none, and vLLM ends a sample `stop`
  exactly when its last token is an EOS (the tokenizer's or generation_config.json's);
- a deadline, `ray_timeout_s`: Ray restarts an engine that fails to start forever;
- CPU engines unbound (`VLLM_CPU_OMP_THREADS_BIND=nobind`): vLLM's CPU engine pins its threads
  to cores it picks as if it were alone on the node, so every replica of a node pins to the
  same cores (on 2 cores, all to core 0: `core ids=[0], reserved_cpus=[1]` in each log); unbound,
  each computes on the OMP_NUM_THREADS Ray gives an actor (its CPUs) wherever the OS finds room.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tasks.backends import _finish, draws_per_prompt, vllm_engine_args
from tasks.prompts import encode_prompts, prompt_seed
from tasks.records import Completion
from tasks.requests import EngineSpec, SamplingSpec


def sample_rows(ids: list[list[int]], prompts: list[str], sampling: SamplingSpec) -> list[dict]:
    """One Ray Data row per sample drawn: which prompt and draw, the prompt's tokens, and n=1
    sampling with the seed vLLM gives that draw of an n-sample request."""
    params = {
        "n": 1,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "max_tokens": sampling.max_tokens,
        "skip_special_tokens": True,
    }
    draws = draws_per_prompt(sampling.n, sampling.temperature)
    return [
        {
            "prompt_index": i,
            "draw": j,
            "tokenized_prompt": list(tokens),
            "sampling_params": {**params, "seed": prompt_seed(sampling.seed, prompt) + j},
        }
        for i, (tokens, prompt) in enumerate(zip(ids, prompts, strict=True))
        for j in range(draws)
    ]


def gather(
    rows: list[dict], n_prompts: int, sampling: SamplingSpec, stop_ids: set[int]
) -> list[list[Completion]]:
    """The samples back in prompt order, `sampling.n` per prompt (a greedy draw copied, as the
    in-process backend does). Each (prompt, draw) must come back exactly once."""
    draws = draws_per_prompt(sampling.n, sampling.temperature)
    got: dict[tuple[int, int], Completion] = {}
    for r in rows:
        key = (int(r["prompt_index"]), int(r["draw"]))
        if key in got:
            raise RuntimeError(f"the Ray pass returned prompt {key[0]}'s draw {key[1]} twice")
        tokens = [int(t) for t in r["generated_tokens"]]
        hit_eos = bool(tokens) and tokens[-1] in stop_ids
        got[key] = Completion(str(r["generated_text"]), len(tokens), _finish(hit_eos))
    missing = [(i, j) for i in range(n_prompts) for j in range(draws) if (i, j) not in got]
    if missing or len(got) != n_prompts * draws:
        raise RuntimeError(
            f"the Ray pass returned {len(got)} of {n_prompts * draws} samples "
            f"(missing (prompt, draw): {missing[:5]})"
        )
    return [[got[i, j] for j in range(draws)] * (sampling.n // draws) for i in range(n_prompts)]


def stop_token_ids(model_path: str, tokenizer: Any) -> set[int]:
    """The tokens on which vLLM ends a sample `stop`: the tokenizer's EOS and the checkpoint's
    generation_config.json EOS ids (vLLM reads those even with generation_config="vllm")."""
    from transformers import GenerationConfig

    try:
        extra = GenerationConfig.from_pretrained(model_path).eos_token_id
    except OSError:  # no generation_config.json
        extra = None
    ids = {tokenizer.eos_token_id, *(extra if isinstance(extra, list) else [extra])}
    ids.discard(None)
    return ids


CPU_ENGINE_ENV = {"VLLM_CPU_OMP_THREADS_BIND": "nobind"}
"""What a CPU engine replica runs with (see the module's docstring)."""


def processor_args(model_path: str, engine: EngineSpec, seed: int) -> dict[str, Any]:
    """`ray.data.llm.vLLMEngineProcessorConfig`'s arguments (see the module's docstring)."""
    bundle = {"CPU": engine.ray_num_cpus}
    if engine.ray_num_gpus:
        bundle["GPU"] = engine.ray_num_gpus
    return dict(
        model_source=model_path,
        engine_kwargs=vllm_engine_args(engine, seed),
        concurrency=(engine.replicas, engine.replicas),
        batch_size=engine.ray_batch_size,
        placement_group_config={"bundle_per_worker": bundle},
        runtime_env=None if engine.ray_num_gpus else {"env_vars": CPU_ENGINE_ENV},
        chat_template_stage=False,
        tokenize_stage=False,
        detokenize_stage=False,
        log_engine_metrics=False,
    )


@contextmanager
def ray_session(address: str | None) -> Iterator[None]:
    """Ray joined at `address`, or, with None, a local Ray started here (bound to 127.0.0.1,
    no dashboard) and stopped on exit. A caller that already joined one keeps it."""
    import ray

    if ray.is_initialized():
        yield
        return
    if address:
        ray.init(address=address)
    else:
        ray.init(_node_ip_address="127.0.0.1", include_dashboard=False)
    try:
        yield
    finally:
        ray.shutdown()


def run_pass(dataset: Any, engine: EngineSpec) -> list[dict]:
    """Every output row of `dataset` (the columns `gather` reads), or a TimeoutError naming
    `engine.ray_timeout_s` once it has run that long."""
    keep = ("prompt_index", "draw", "generated_text", "generated_tokens")
    out: dict[str, Any] = {}

    def consume() -> None:
        try:
            out["rows"] = [{k: r[k] for k in keep} for r in dataset.iter_rows()]
        except BaseException as e:  # handed to the caller's thread
            out["error"] = e

    # A daemon thread: a pass stuck on an engine Ray keeps restarting must not keep the worker
    # alive past the error (the driver's exit ends its actors on the cluster).
    thread = threading.Thread(target=consume, name="ray-data-pass", daemon=True)
    thread.start()
    thread.join(engine.ray_timeout_s)
    if thread.is_alive():
        raise TimeoutError(
            f"engine.ray_timeout_s: the Ray pass did not finish in {engine.ray_timeout_s:g} s; "
            "an engine that fails to start is restarted forever (see the replicas' log), and "
            f"{engine.replicas} replica(s) x {engine.tensor_parallel_size} rank(s) of "
            f"{engine.ray_num_cpus:g} CPU / {engine.ray_num_gpus:g} GPU must fit the cluster"
        )
    if "error" in out:
        raise out["error"]
    return out["rows"]


def generate_ray(
    model_path: str,
    prompts: list[str],
    engine: EngineSpec,
    sampling: SamplingSpec,
    *,
    timings: dict[str, float] | None = None,
    warmup: bool = False,
    progress: bool = False,
) -> list[list[Completion]]:
    """The backends' signature (`tasks.backends`). The replicas start inside the pass, so
    `generate_s` includes their engine starts and `engine_load_s` is joining (or starting)
    Ray; `warmup` is unused. `progress` shows Ray Data's progress bars."""
    try:
        import ray
        from ray.data import TaskPoolStrategy
        from ray.data.llm import build_processor, vLLMEngineProcessorConfig
    except ImportError as e:
        raise RuntimeError(
            f"engine.backend is 'ray' but ray.data.llm cannot be imported ({e}); install "
            "ray[default,data,serve] (ray[llm] would pull vLLM's GPU build)"
        ) from e
    from transformers import AutoTokenizer

    if not prompts:  # nothing to sample: no cluster joined, no engine started
        if timings is not None:
            timings.update(engine_load_s=0.0, generate_s=0.0)
        return []
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    ids = encode_prompts(tokenizer, prompts, engine.max_model_len)
    rows = sample_rows(ids, prompts, sampling)
    config = vLLMEngineProcessorConfig(**processor_args(model_path, engine, sampling.seed))
    t0 = time.perf_counter()
    with ray_session(engine.ray_address):
        t1 = time.perf_counter()
        ray.data.DataContext.get_current().enable_progress_bars = progress
        # Ray Data wraps the engine stage in two row-copying map stages, each task asking a
        # CPU by default: with the replicas holding every CPU (2 replicas on 2 CPUs) the first
        # task never schedules and the pass waits forever. They take no reservation here, and
        # so need a cap: tasks that reserve nothing are all launched at once, each in a Ray
        # worker process of its own (64 of them on a 2-CPU node, load average 108, measured).
        free = {"num_cpus": 0, "compute": TaskPoolStrategy(size=engine.replicas)}
        processor = build_processor(config, preprocess_map_kwargs=free, postprocess_map_kwargs=free)
        out = run_pass(processor(ray.data.from_items(rows)), engine)
    t2 = time.perf_counter()
    if timings is not None:
        timings.update(engine_load_s=t1 - t0, generate_s=t2 - t1)
    return gather(out, len(prompts), sampling, stop_token_ids(model_path, tokenizer))
