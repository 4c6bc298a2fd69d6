"""Running a judge over candidates: one worker process, one engine load, one engine call.

The worker (`python -m tasks.judge_run`, via `judge_in_subprocess`) reads a candidates Parquet
(question, completion), renders every judge prompt with its own nonce, asks the generation
backend for k samples of each prompt in a single call (the rubric prefix is shared by every
prompt, so vLLM's prefix cache serves it once), parses and votes, and writes one row per
candidate. Its request is a `tasks.requests.JudgeRequest`: the judge's settings
(`tasks.requests.judge_settings`) and the two files. The backends are
`tasks.backends.BACKENDS`, the policy's own: the judge is just another model path (or an HTTP
endpoint) with its own engine and sampling specs.

`judge_candidates` is the orchestrator-side call (the curate stage, `bench/judge_policy_qc`); its
votes reach the `judge` reward as the precomputed `judge_verdict` column.
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tasks.backends import BACKENDS, release_engines
from tasks.judge import JudgeVote, load_rubric, parse_verdict, render, vote
from tasks.judge import make_nonce as _make_nonce
from tasks.records import stable_hash
from tasks.requests import JudgeRequest, JudgeSettings, from_json, to_json
from tasks.store import write_parquet
from tasks.subproc import run_worker, worker_main
from tasks.threads import set_torch_threads

VOTES_SCHEMA = pa.schema(
    [
        ("outcome", pa.string()),
        ("reason", pa.string()),
        ("accepts", pa.int64()),
        ("rejects", pa.int64()),
        ("errors", pa.int64()),
        ("margin", pa.float64()),
        ("outputs", pa.string()),  # JSON list of the k raw judge texts, for inspection
    ]
)


def nonce_for(seed: int, index: int, completion: str) -> str:
    """A per-prompt nonce: unpredictable from the candidate alone, reproducible for a run."""
    return _make_nonce(random.Random(stable_hash("judge-nonce", seed, index, completion)))


def main(request: dict) -> dict:
    """Worker entry: render, generate k verdicts per candidate, parse, vote, write."""
    start = time.perf_counter()
    req = from_json(JudgeRequest, request)
    j = req.judge
    backend = BACKENDS.get(j.engine.backend)
    if backend is None:
        raise ValueError(f"judge.backend: unknown {j.engine.backend!r}; known: {sorted(BACKENDS)}")
    if j.engine.backend == "hf":  # torch computes here; vLLM and a server set their own
        set_torch_threads(j.engine.cpu_threads, "engine.cpu_threads")
    rubric = load_rubric(j.rubric)
    rows = pq.read_table(req.candidates_file, columns=["question", "completion"]).to_pylist()
    prompts = [
        render(
            rubric,
            r["question"],
            r["completion"],
            nonce_for(j.sampling.seed, i, r["completion"]),
            j.max_candidate_chars,
        )
        for i, r in enumerate(rows)
    ]
    timings: dict[str, float] = {}
    outputs = backend(
        j.model_path, prompts, j.engine, j.sampling, timings=timings, progress=j.progress
    )
    release_engines()
    out_rows = []
    for samples in outputs:
        v = vote(
            [parse_verdict(c.text, rubric, c.finish_reason) for c in samples], j.max_error_share
        )
        out_rows.append({**asdict(v), "outputs": json.dumps([c.text for c in samples])})
    Path(req.out_file).parent.mkdir(parents=True, exist_ok=True)
    write_parquet(out_rows, Path(req.out_file), schema=VOTES_SCHEMA)
    tokens = sum(c.num_tokens for samples in outputs for c in samples)
    gen_s = max(timings.get("generate_s", 0.0), 1e-9)
    return {
        "candidates": len(rows),
        "calls": len(rows) * j.sampling.n,
        "rubric_version": rubric.version,
        "tokens": tokens,
        "seconds": time.perf_counter() - start,
        "engine_load_s": timings.get("engine_load_s", 0.0),
        "generate_s": timings.get("generate_s", 0.0),
        "candidates_per_s": len(rows) / gen_s,
        "tokens_per_s": tokens / gen_s,
    }


def judge_in_subprocess(request: JudgeRequest, log_path: Path | None = None) -> dict:
    """Run the judge worker in its own process (memory returned, crashes contained)."""
    return run_worker("tasks.judge_run", to_json(request), log_path)


def judge_candidates(
    questions: list[str],
    completions: list[str],
    judge: JudgeSettings,
    log_path: Path | None = None,
) -> tuple[list[JudgeVote], dict]:
    """Judge every (question, completion) in one worker run; votes in order, and its stats."""
    if len(questions) != len(completions):
        raise ValueError(f"{len(questions)} questions for {len(completions)} completions")
    with tempfile.TemporaryDirectory(prefix="flywheel-judge-") as tmp:
        cand, out = Path(tmp) / "candidates.parquet", Path(tmp) / "votes.parquet"
        write_parquet(
            [{"question": q, "completion": c} for q, c in zip(questions, completions, strict=True)],
            cand,
        )
        stats = judge_in_subprocess(JudgeRequest(judge, str(cand), str(out)), log_path)
        rows = pq.read_table(out).to_pylist()
    votes = [JudgeVote(**{k: v for k, v in r.items() if k != "outputs"}) for r in rows]
    return votes, stats


if __name__ == "__main__":
    worker_main(main)
