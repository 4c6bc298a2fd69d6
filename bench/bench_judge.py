"""Judge throughput: one engine call for a whole batch of judge prompts vs one call per sample.

Both ways run in ONE worker process on ONE vLLM engine (loaded once, warmed up), on the same
judge model and the same candidates, rendered exactly as `tasks.judge_run` renders them (the
rubric prefix, the per-candidate nonce, the capped candidate) with the default config's judge
settings (`tasks.requests.judge_settings`: engine, k votes, temperature, max tokens). The
batched way is what `tasks.judge_run` does: every prompt in a single `generate`, so the
scheduler decodes them together and the prefix cache serves the shared rubric once. The
per-sample way sends one prompt per call, as a naive judge loop would. The warm-up caches the rubric
prefix, so the cache serves both ways alike; with the terse `arith_v1` rubric (its shared prefix
is a few characters, the question comes early) nearly all of the gain is the batching itself,
not the prefix cache.

The model is an untrained judge of the embedded judge's shape (`bootstrap_judge` with 0 steps):
speed depends on the shape, not the weights (building the trained one costs its 400 pretraining
steps). Untrained, its votes are noise of varied lengths up to `max_tokens`; both ways decode the
same tokens (per-prompt seeds), which the result checks (`same_votes_share`).

    python -m bench.bench_judge --candidates 64
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from tasks.config import FlywheelConfig, JudgeConfig
from tasks.requests import JudgeSettings, from_json, judge_settings, to_json


def make_prompts(count: int, judge: JudgeSettings, seed: int = 0) -> list[str]:
    """`count` judge prompts over arith candidates (reference solutions and their faults)."""
    from bench.bench_curate import make_samples
    from tasks.judge import load_rubric, render
    from tasks.judge_run import nonce_for

    rubric = load_rubric(judge.rubric)
    samples = make_samples(count, n=4, seed=seed)
    return [
        render(
            rubric,
            s.prompt.removeprefix("Q: ").strip(),
            s.completion,
            nonce_for(judge.sampling.seed, i, s.completion),
            judge.max_candidate_chars,
        )
        for i, s in enumerate(samples)
    ]


def main(request: dict) -> dict:
    """Worker: load the engine once, warm up, then time per-sample calls and one batched call."""
    from transformers import AutoTokenizer

    from tasks.backends import vllm_completions, vllm_engine, vllm_params
    from tasks.prompts import encode_prompts

    judge = from_json(JudgeSettings, request["judge"])
    prompts = make_prompts(request["candidates"], judge)
    tokenizer = AutoTokenizer.from_pretrained(judge.model_path)
    ids = encode_prompts(tokenizer, prompts, judge.engine.max_model_len)
    t0 = time.perf_counter()
    llm = vllm_engine(judge.model_path, judge.engine, judge.sampling.seed)
    load_s = time.perf_counter() - t0
    params = vllm_params(prompts, judge.sampling)
    inputs = [{"prompt_token_ids": x} for x in ids]
    # Warm-up: a few prompts batched and one alone (first-call kernel set-up for both shapes).
    llm.generate(inputs[:4], params[:4], use_tqdm=False)
    llm.generate(inputs[:1], params[:1], use_tqdm=False)

    t1 = time.perf_counter()
    single = [
        llm.generate([x], [p], use_tqdm=False)[0] for x, p in zip(inputs, params, strict=True)
    ]
    t2 = time.perf_counter()
    batched = llm.generate(inputs, params, use_tqdm=False)
    t3 = time.perf_counter()

    runs = {}
    for name, outputs, seconds in (("per_sample", single, t2 - t1), ("batched", batched, t3 - t2)):
        comps = vllm_completions(outputs, judge.sampling)
        tokens = sum(c.num_tokens for cs in comps for c in cs)
        runs[name] = {
            "calls": len(prompts) if name == "per_sample" else 1,
            "seconds": seconds,
            "tokens": tokens,
            "tokens_per_s": tokens / seconds,
            "candidates_per_s": len(prompts) / seconds,
            "texts": [[c.text for c in cs] for cs in comps],
        }
    same = sum(
        a == b for a, b in zip(runs["per_sample"]["texts"], runs["batched"]["texts"], strict=True)
    )
    for r in runs.values():
        del r["texts"]
    return {
        "candidates": len(prompts),
        "k": judge.sampling.n,
        "max_tokens": judge.sampling.max_tokens,
        "prompt_tokens_mean": sum(map(len, ids)) / len(ids),
        "engine_load_s": load_s,
        "same_votes_share": same / len(prompts),
        "runs": runs,
    }


def untrained_judge(root: Path, judge: JudgeConfig) -> str:
    """An untrained judge of the embedded judge's shape (0 training steps), in `root`."""
    from tasks.judge_bootstrap import bootstrap_judge

    return str(
        bootstrap_judge(
            root,
            rubric=judge.rubric,
            max_position=judge.max_model_len,
            steps=0,
            max_candidate_chars=judge.candidate_chars(),
            exclude=(),
            progress=False,
        )
    )


def measure(candidates: int = 64, model: str | None = None) -> dict:
    from tasks.subproc import run_worker

    cfg = FlywheelConfig()
    with tempfile.TemporaryDirectory(prefix="bench-judge-") as tmp:
        model_path = model or untrained_judge(Path(tmp), cfg.judge)
        judge = judge_settings(cfg, model_path, cfg.judge.seed, progress=False)
        m = run_worker("bench.bench_judge", {"candidates": candidates, "judge": to_json(judge)})
    m["model"] = model or "untrained judge, embedded judge's shape (bootstrap_judge, 0 steps)"
    return m


def ratios(m: dict) -> list:
    """P4: batched judge tokens/s ÷ one call per sample, same engine."""
    from bench.report import Goal, Ratio, ratio

    b, s = m["runs"]["batched"], m["runs"]["per_sample"]
    return [
        Ratio(
            "P4",
            "batched judge ÷ one call per sample",
            ratio(b["tokens_per_s"], s["tokens_per_s"]),
            Goal(">=", 5.0),
            detail=f"{b['tokens_per_s']:,.0f} ÷ {s['tokens_per_s']:,.0f} judge tok/s "
            f"({b['candidates_per_s']:.1f} ÷ {s['candidates_per_s']:.1f} candidates/s), "
            f"{m['candidates']} candidates x k={m['k']} x <= {m['max_tokens']} tokens, "
            f"one warm vLLM engine; {m['same_votes_share']:.0%} identical votes; {m['model']}",
        )
    ]


def run(sizes: dict) -> object:
    """`bench.run_all`'s entry: `sizes["judge_candidates"]` candidates (default 64)."""
    from bench.report import BenchResult

    m = measure(candidates=sizes.get("judge_candidates", 64))
    return BenchResult("judge", ratios(m), m)


def cli() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", type=int, default=64)
    ap.add_argument("--model", help="a judge checkpoint (default: untrained, embedded shape)")
    args = ap.parse_args()
    for r in ratios(measure(args.candidates, args.model)):
        print(f"{r.key} {r.name}: {r.value:.2f}{r.unit}  ({r.detail})")


if __name__ == "__main__":
    import sys

    if len(sys.argv) == 3 and sys.argv[1].endswith(".json"):
        from tasks.subproc import worker_main

        worker_main(main)
    else:
        cli()
