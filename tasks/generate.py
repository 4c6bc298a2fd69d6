"""The generation worker: a questions Parquet in, a samples Parquet out, in its own process
(`python -m tasks.generate`, via `generate_in_subprocess`).

It renders the prompts (`tasks.prompts`), runs the requested backend (`tasks.backends`) and
writes one row per (seed, sample) with the student's own rendering of the question beside it.
Importing this module (as the orchestrator does) loads neither torch nor vLLM.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tasks.backends import BACKENDS, HttpSettings
from tasks.prompts import apply_template, render_prompts
from tasks.records import Completion
from tasks.store import write_parquet
from tasks.subproc import run_worker, worker_main

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


# ---------------------------------------------------------------------------------------------
# Worker: questions Parquet -> samples Parquet, in its own process.


@dataclass(frozen=True)
class GenerateRequest:
    """What the generate worker needs; built from the JSON request, so a wrong key fails loudly."""

    model_path: str
    questions_file: str  # Parquet with columns seed_id, question
    out_file: str  # Parquet written here: one row per (seed_id, sample_index)
    backend: str = "vllm"
    n: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 96
    seed: int = 0
    dtype: str = "float32"
    gpu_memory_utilization: float = 0.3
    max_model_len: int = 256
    hf_batch_size: int = 256
    enforce_eager: bool = True
    progress: bool = False
    prompt_template: str = "Q: {question}\n"
    chat_template: bool = False
    system_prompt: str | None = None
    template: str = "plain"  # a TEMPLATES name, applied to the prompt this model sees
    student_model: str | None = None  # whose tokenizer renders `train_prompt` (None: this one)
    warmup: bool = False  # one untimed short generate call before the timed one (benchmarks)
    # A served model (backend `openai`): model_path is its name on the server at base_url
    # (None: the environment's OPENAI_BASE_URL), the key in the variable api_key_env names.
    base_url: str | None = None
    api_key_env: str | None = None


def http_settings(req: GenerateRequest) -> HttpSettings:
    """The environment's HTTP settings with the request's endpoint and key variable on top."""
    env = HttpSettings.from_env()
    return replace(
        env,
        base_url=(req.base_url or env.base_url).rstrip("/"),
        api_key_env=req.api_key_env or env.api_key_env,
    )


def prompt_tokenizers(req: GenerateRequest) -> tuple[Any, Any]:
    """(tokenizer that renders the generator's prompts, the student's for `train_prompt`).

    A served model's tokenizer is the server's: it gets plain-text prompts, which need none
    (a chat template would have to be the server's, and `/completions` takes text only).
    """
    from transformers import AutoTokenizer

    if req.backend == "openai":
        if req.chat_template:
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


def run_backend(
    req: Any, prompts: list[str], n: int, timings: dict[str, float], **extra: Any
) -> list[list[Completion]]:
    """`n` samples per prompt from `req.backend`, with the engine and sampling settings of a
    worker request (`GenerateRequest`, the judge's request: the same field names)."""
    return BACKENDS[req.backend](
        req.model_path,
        prompts,
        n=n,
        temperature=req.temperature,
        top_p=req.top_p,
        max_tokens=req.max_tokens,
        seed=req.seed,
        dtype=req.dtype,
        gpu_memory_utilization=req.gpu_memory_utilization,
        max_model_len=req.max_model_len,
        hf_batch_size=req.hf_batch_size,
        progress=req.progress,
        enforce_eager=req.enforce_eager,
        timings=timings,
        **extra,
    )


def main(request: dict) -> dict:
    """Worker entry: render, generate, write the samples Parquet; return counts and timings."""
    start = time.perf_counter()
    req = GenerateRequest(**request)
    if req.backend not in BACKENDS:
        raise ValueError(f"unknown backend {req.backend!r}; known: {sorted(BACKENDS)}")
    questions = pq.read_table(req.questions_file, columns=["seed_id", "question"]).to_pylist()
    tokenizer, student = prompt_tokenizers(req)
    texts = [q["question"] for q in questions]
    template, system = apply_template(
        req.template, req.prompt_template, req.chat_template, req.system_prompt
    )
    prompts = render_prompts(tokenizer, texts, template, req.chat_template, system)
    # What a student trains on is the plain prompt in its own format, whichever model and
    # template produced the completion (a teacher's chat markup or the reflect instruction
    # would otherwise become part of the student's training input).
    train_prompts = render_prompts(
        student, texts, req.prompt_template, req.chat_template, req.system_prompt
    )
    timings: dict[str, float] = {}
    extra = {"settings": http_settings(req)} if req.backend == "openai" else {}
    completions = run_backend(req, prompts, req.n, timings, warmup=req.warmup, **extra)
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
    Path(req.out_file).parent.mkdir(parents=True, exist_ok=True)
    write_parquet(rows, Path(req.out_file), schema=SAMPLES_SCHEMA)
    tokens = sum(r["num_tokens"] for r in rows)
    return {
        "rows": len(rows),
        "seconds": time.perf_counter() - start,
        "tokens": tokens,
        "tokens_per_s": tokens / max(timings["generate_s"], 1e-9),
        "engine_load_s": timings["engine_load_s"],
        "generate_s": timings["generate_s"],
    }


def generate_in_subprocess(request: dict, log_path: Path | None = None) -> dict:
    """Run the generate worker in its own process (memory returned, crashes contained)."""
    return run_worker("tasks.generate", request, log_path)


if __name__ == "__main__":
    worker_main(main)
