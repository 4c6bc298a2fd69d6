"""Generation throughput: vLLM's engine (eager and compiled) against HF `generate`, side by side;
and vLLM's engine in processes of its own against inside the worker (`engine.multiprocessing`).

Each backend runs through the real worker process (`tasks.generate`), one engine load per run,
on the same model and the same prompts, with one short untimed warm-up call after the load.
Prints engine load time, generation time and tokens/s, and each run's throughput as a multiple
of HF's. `measure` and `ratios` serve `bench.run_all` (P1, P6, P9).

    .venv/bin/python bench/bench_generate.py                 # untrained default policy shape
    .venv/bin/python bench/bench_generate.py --model PATH    # any local checkpoint

Without --model it benches an untrained copy of the default bootstrap policy (the demo's shape;
speed depends on shape, not on training), made in a temporary folder.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from tasks.config import BootstrapConfig, FlywheelConfig
from tasks.generate import generate_in_subprocess
from tasks.requests import generate_request, sampling_spec
from tasks.store import write_parquet


def untrained_default_policy(root: Path) -> str:
    from tasks.bootstrap import bootstrap

    # The recipe only: `cpu_threads` is how fast it is made, not what (not a `bootstrap` argument).
    recipe = BootstrapConfig().model_dump(exclude={"cpu_threads"}) | {"pretrain_steps": 0}
    return str(bootstrap(root, **recipe, progress=False))


def measure(
    model: str | None = None,
    prompts: int = 256,
    n: int = 8,
    max_tokens: int = 96,
    hf_batch_size: int = 256,
    runs: tuple[str, ...] = ("hf", "vllm-eager", "vllm-processes"),
) -> dict:
    """Each run's worker result (tokens, engine_load_s, generate_s, tokens_per_s) plus
    `process_s`, the wall time of its whole worker process (its `cpu_s` counts the worker and
    every process it started), and `same_as_vllm_eager`: whether its samples are exactly the
    in-process engine's, on one prompt set."""
    with tempfile.TemporaryDirectory(prefix="bench-generate-") as tmp:
        tmp = Path(tmp)
        model_path = model or untrained_default_policy(tmp / "models")
        rng = random.Random(0)
        questions = [
            {"seed_id": f"s{i}", "question": f"{rng.randint(0, 99)}+{rng.randint(0, 99)}"}
            for i in range(prompts)
        ]
        write_parquet(questions, tmp / "questions.parquet")
        # The default config's engine and sampling at this size; each run changes the backend.
        cfg = FlywheelConfig(
            engine={"max_model_len": 256, "hf_batch_size": hf_batch_size},
            sampling={"n": n, "temperature": 1.0, "top_p": 1.0, "max_tokens": max_tokens},
        )
        base = generate_request(
            cfg, model_path, sampling_spec(cfg, 0), tmp / "questions.parquet", tmp / "out"
        )
        base = replace(base, progress=False, warmup=True)
        results = {}
        for name in runs:
            t0 = time.perf_counter()
            request = replace(
                base,
                engine=replace(base.engine, **RUNS[name]),
                out_file=str(tmp / f"{name}.parquet"),
            )
            res = generate_in_subprocess(request, log_path=tmp / f"{name}.log")
            res["process_s"] = time.perf_counter() - t0
            results[name] = res
        texts = {n: _texts(tmp / f"{n}.parquet") for n in runs}
        for name in runs:
            if name != "vllm-eager" and "vllm-eager" in runs:
                results[name]["same_as_vllm_eager"] = texts[name] == texts["vllm-eager"]
    return {
        "model": model or "untrained default policy (demo shape)",
        "prompts": prompts,
        "n": n,
        "max_tokens": max_tokens,
        "runs": results,
    }


def ratios(m: dict) -> list:
    """P1: vLLM ÷ HF tokens/s. P6: a generate worker's wall time ÷ its pure phases."""
    from bench.report import Goal, Ratio, ratio

    runs = m["runs"]
    hf, vl = runs.get("hf"), runs.get("vllm-eager") or runs.get("vllm-compiled")
    shape = f"{m['prompts']} prompts x n={m['n']} x <= {m['max_tokens']} tokens"
    out = []
    if hf and vl:
        out.append(
            Ratio(
                "P1",
                "vLLM tokens/s ÷ HF generate tokens/s",
                ratio(vl["tokens_per_s"], hf["tokens_per_s"]),
                Goal(">=", 1.0),
                detail=f"{vl['tokens_per_s']:,.0f} ÷ {hf['tokens_per_s']:,.0f} tok/s, {shape}, "
                "warm-up excluded",
            )
        )
    for name, r in runs.items():
        pure = r["engine_load_s"] + r["generate_s"]
        out.append(
            Ratio(
                "P6",
                f"generate worker wall ÷ pure phases ({name})",
                ratio(r["process_s"], pure),
                None,
                detail=f"{r['process_s']:.1f} s ÷ (load {r['engine_load_s']:.1f} + decode "
                f"{r['generate_s']:.1f} s); the rest: process start, imports, tokenize, write",
            )
        )
    inside, apart = runs.get("vllm-eager"), runs.get("vllm-processes")
    if inside and apart:
        same = "same samples" if apart.get("same_as_vllm_eager") else "DIFFERENT samples"
        out.append(
            Ratio(
                "P9",
                "vLLM generate worker wall, engine in its own processes ÷ in the worker",
                ratio(apart["process_s"], inside["process_s"]),
                Goal(">=", 1.2),
                detail=f"{apart['process_s']:.1f} s ÷ {inside['process_s']:.1f} s (engine start "
                f"{apart['engine_load_s']:.1f} ÷ {inside['engine_load_s']:.1f} s, CPU "
                f"{apart['cpu_s']:.1f} ÷ {inside['cpu_s']:.1f} s), {same}",
            )
        )
    return out


def _texts(path: Path) -> list[str] | None:
    import pyarrow.parquet as pq

    return pq.read_table(path).column("completion").to_pylist() if path.exists() else None


RUNS = {
    "hf": {"backend": "hf"},
    # engine.multiprocessing None: in the worker on CPU, in processes of its own on GPUs
    "vllm-eager": {"backend": "vllm", "enforce_eager": True},
    "vllm-processes": {"backend": "vllm", "enforce_eager": True, "multiprocessing": True},
    "vllm-compiled": {"backend": "vllm", "enforce_eager": False},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="local HF checkpoint (default: untrained default policy)")
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--hf-batch-size", type=int, default=256)
    ap.add_argument(
        "--runs",
        default="hf,vllm-eager,vllm-processes,vllm-compiled",
        help="comma list of runs to do",
    )
    args = ap.parse_args()
    m = measure(
        args.model,
        args.prompts,
        args.n,
        args.max_tokens,
        args.hf_batch_size,
        tuple(args.runs.split(",")),
    )
    print(
        f"\nmodel: {m['model']}; {args.prompts} prompts x {args.n} samples x "
        f"<= {args.max_tokens} tokens"
    )
    header = f"{'run':<15}{'load s':>9}{'gen s':>9}{'process s':>11}{'CPU s':>8}{'tokens':>9}"
    print(header + f"{'tok/s':>10}{'x hf':>8}  samples")
    hf = m["runs"].get("hf", {}).get("tokens_per_s")
    for name, r in m["runs"].items():
        x = f"{r['tokens_per_s'] / hf:8.2f}" if hf else f"{'-':>8}"
        same = {True: "= vllm-eager's", False: "differ from vllm-eager's"}.get(
            r.get("same_as_vllm_eager"), ""
        )
        print(
            f"{name:<15}{r['engine_load_s']:9.1f}{r['generate_s']:9.2f}{r['process_s']:11.1f}"
            f"{r['cpu_s']:8.1f}{r['tokens']:9d}{r['tokens_per_s']:10.0f}{x}  {same}"
        )


if __name__ == "__main__":
    main()
