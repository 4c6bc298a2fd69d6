"""Generation throughput: vLLM's engine (eager and compiled) against HF `generate`, side by side.

Each backend runs through the real worker process (`tasks.generate`), one engine load per run,
on the same model and the same prompts. Prints engine load time, generation time and
tokens/s, and each run's throughput as a multiple of HF's.

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
from pathlib import Path

from tasks.config import BootstrapConfig
from tasks.generate import generate_in_subprocess
from tasks.store import write_parquet


def untrained_default_policy(root: Path) -> str:
    from tasks.bootstrap import bootstrap

    recipe = BootstrapConfig().model_dump() | {"pretrain_steps": 0}
    return str(bootstrap(root, **recipe, progress=False))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="local HF checkpoint (default: untrained default policy)")
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--hf-batch-size", type=int, default=256)
    ap.add_argument(
        "--runs", default="hf,vllm-eager,vllm-compiled", help="comma list of runs to do"
    )
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-generate-") as tmp:
        tmp = Path(tmp)
        model = args.model or untrained_default_policy(tmp / "models")
        rng = random.Random(0)
        questions = [
            {"seed_id": f"s{i}", "question": f"{rng.randint(0, 99)}+{rng.randint(0, 99)}"}
            for i in range(args.prompts)
        ]
        write_parquet(questions, tmp / "questions.parquet")
        base = {
            "model_path": model,
            "questions_file": str(tmp / "questions.parquet"),
            "n": args.n,
            "temperature": 1.0,
            "top_p": 1.0,
            "max_tokens": args.max_tokens,
            "seed": 0,
            "dtype": "float32",
            "gpu_memory_utilization": 0.3,
            "max_model_len": 256,
            "hf_batch_size": args.hf_batch_size,
        }
        runs = {
            "hf": {"backend": "hf"},
            "vllm-eager": {"backend": "vllm", "enforce_eager": True},
            "vllm-compiled": {"backend": "vllm", "enforce_eager": False},
        }
        results = {}
        for name in args.runs.split(","):
            t0 = time.perf_counter()
            res = generate_in_subprocess(
                {**base, **runs[name], "out_file": str(tmp / f"{name}.parquet")},
                log_path=tmp / f"{name}.log",
            )
            res["process_s"] = time.perf_counter() - t0
            results[name] = res

    print(
        f"\nmodel: {args.model or 'untrained default policy'}; {args.prompts} prompts x "
        f"{args.n} samples x <= {args.max_tokens} tokens"
    )
    header = f"{'run':<15}{'load s':>9}{'gen s':>9}{'process s':>11}{'tokens':>9}{'tok/s':>10}"
    print(header + f"{'x hf':>8}")
    hf = results.get("hf", {}).get("tokens_per_s")
    for name, r in results.items():
        ratio = f"{r['tokens_per_s'] / hf:8.2f}" if hf else f"{'-':>8}"
        print(
            f"{name:<15}{r['engine_load_s']:9.1f}{r['generate_s']:9.2f}{r['process_s']:11.1f}"
            f"{r['tokens']:9d}{r['tokens_per_s']:10.0f}{ratio}"
        )


if __name__ == "__main__":
    main()
