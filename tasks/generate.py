"""The generation worker: a questions Parquet in, a samples Parquet out, in its own process
(`python -m tasks.generate`, via `generate_in_subprocess`).

Its request is a `tasks.requests.GenerateRequest` (JSON, rebuilt strictly). It renders the
prompts (`tasks.prompts`), runs the requested backend (`tasks.backends`) with the request's
engine and sampling specs, and writes one row per (seed, sample) with the student's own
rendering of the question beside it. Importing this module (as the orchestrator does) loads
neither torch nor vLLM.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tasks.backends import BACKENDS, release_engines
from tasks.prompts import generator_prompts
from tasks.requests import GenerateRequest, SamplingSpec, from_json, to_json
from tasks.store import write_parquet
from tasks.subproc import run_worker, worker_main
from tasks.threads import set_torch_threads

# The columns of the samples file the worker writes.
SAMPLES_SCHEMA = pa.schema(
    [
        ("seed_id", pa.string()),
        ("sample_index", pa.int64()),
        ("prompt", pa.string()),
        ("completion", pa.string()),
        ("num_tokens", pa.int64()),
        ("finish_reason", pa.string()),
        ("train_prompt", pa.string()),  # the student's rendering of the question (see main)
    ]
)


def prompt_tokenizers(req: GenerateRequest) -> tuple[Any, Any]:
    """(tokenizer that renders the generator's prompts, the student's for `train_prompt`).

    A served model's tokenizer is the server's: it gets plain-text prompts, which need none
    (a chat template would have to be the server's, and `/completions` takes text only).
    """
    from transformers import AutoTokenizer

    if req.engine.backend == "openai":
        if req.prompt.chat_template:
            raise ValueError(
                f"{req.model_path}: a served model (backend openai) takes plain-text prompts; "
                "chat_template must be false"
            )
        tokenizer = None
    else:
        tokenizer = AutoTokenizer.from_pretrained(req.model_path)
    student = tokenizer
    if req.student_model is not None and req.student_model != req.model_path:
        student = AutoTokenizer.from_pretrained(req.student_model)
    return tokenizer, student


def main(request: dict) -> dict:
    """Worker entry: render, generate, write the samples Parquet; return counts and timings."""
    start = time.perf_counter()
    req = from_json(GenerateRequest, request)
    backend = BACKENDS.get(req.engine.backend)
    if backend is None:
        raise ValueError(
            f"engine.backend: unknown {req.engine.backend!r}; known: {sorted(BACKENDS)}"
        )
    if req.engine.backend == "hf":  # torch computes here; vLLM and a server set their own
        set_torch_threads(req.engine.cpu_threads, "engine.cpu_threads")
    columns = ["seed_id", "question"] + (["answer"] if req.hint is not None else [])
    questions = pq.read_table(req.questions_file, columns=columns).to_pylist()
    tokenizer, student = prompt_tokenizers(req)
    # STaR's rationalization shows the generator each gold answer; the student never sees it.
    hint = None if req.hint is None else (req.hint, [q["answer"] for q in questions])
    prompts, train_prompts = generator_prompts(
        tokenizer, student, [q["question"] for q in questions], req.prompt, req.template, hint
    )

    def one(sampling: SamplingSpec, out_file: str) -> dict:
        return _sample_pass(backend, req, prompts, train_prompts, questions, sampling, out_file)

    stats = one(req.sampling, req.out_file)
    if req.also:  # further passes reuse the loaded engine (`tasks.backends.vllm_engine`)
        stats["also"] = [one(x.sampling, x.out_file) for x in req.also]
    release_engines()
    return {**stats, "seconds": time.perf_counter() - start}


def _sample_pass(
    backend: Any,
    req: GenerateRequest,
    prompts: list[str],
    train_prompts: list[str],
    questions: list[dict],
    sampling: SamplingSpec,
    out_file: str,
) -> dict:
    """One sampling of every prompt into `out_file`; its counts and timings."""
    timings: dict[str, float] = {}
    completions = backend(
        req.model_path,
        prompts,
        req.engine,
        sampling,
        timings=timings,
        warmup=req.warmup,
        progress=req.progress,
    )
    rows = [
        {
            "seed_id": q["seed_id"],
            "sample_index": k,
            "prompt": prompt,
            "completion": c.text,
            "num_tokens": c.num_tokens,
            "finish_reason": c.finish_reason,
            "train_prompt": train_prompt,
        }
        for q, prompt, train_prompt, samples in zip(
            questions, prompts, train_prompts, completions, strict=True
        )
        for k, c in enumerate(samples)
    ]
    Path(out_file).parent.mkdir(parents=True, exist_ok=True)
    write_parquet(rows, Path(out_file), schema=SAMPLES_SCHEMA)
    tokens = sum(r["num_tokens"] for r in rows)
    return {
        "rows": len(rows),
        "tokens": tokens,
        "tokens_per_s": tokens / max(timings["generate_s"], 1e-9),
        "engine_load_s": timings["engine_load_s"],
        "generate_s": timings["generate_s"],
    }


def generate_in_subprocess(request: GenerateRequest, log_path: Path | None = None) -> dict:
    """Run the generate worker in its own process (memory returned, crashes contained)."""
    return run_worker("tasks.generate", to_json(request), log_path)


if __name__ == "__main__":
    worker_main(main)
