"""SFT in one local process against two gloo processes under `accelerate launch`, same work.

Both go through the train worker as the stage starts it (`tasks.train.train_in_subprocess` on
`tasks.requests.sft_request`), on the same untrained model of the demo's shape and the same
accepted-like set (arith reference solutions, levels 1-5), one epoch at one global batch:
`batch_size` rows in the local process, `batch_size / 2` in each of the two ranks, so both take
the same optimizer steps over the same rows. Each process computes on one torch thread
(`train.cpu_threads: 1`). Runs alternate (local, accelerate, local, ...) so a neighbour's load
falls on both alike.

Per run: `wall_s` and `cpu_s` of the whole worker (the launcher, its ranks, their start-up:
each rank imports torch and TRL), the Trainer's own `train_seconds` (its training loop only),
and what ran (world size, distributed type, steps per process). On a shared 2-core machine the
wall times measure the neighbours too: CPU seconds measure the work.

    python -m bench.bench_accelerate --samples 512 --reps 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

from tasks.config import FlywheelConfig

ROOT = Path(__file__).resolve().parents[1]
KEPT = (
    "wall_s",
    "cpu_s",
    "train_seconds",
    "steps",
    "world_size",
    "distributed_type",
    "steps_per_process",
    "train_loss_first",
    "train_loss_last",
)


def train_settings(launcher: str, batch_size: int) -> dict:
    """`train.*` of one run: the local process with the whole batch, or two ranks with half each."""
    common = {"epochs": 1.0, "max_length": 256, "cpu_threads": 1, "warmup_ratio": 0.0}
    if launcher == "local":
        return {**common, "batch_size": batch_size}
    return {
        **common,
        "batch_size": batch_size // 2,
        "launcher": "accelerate",
        "num_processes": 2,
        "accelerate_config": str(ROOT / "configs" / "accelerate" / "ddp.yaml"),
    }


def untrained_policy(root: Path) -> str:
    """The demo's policy shape, untrained (`bootstrap.pretrain_steps: 0`), made by its real
    bootstrap from the request the setup stage builds."""
    from tasks.bootstrap import bootstrap
    from tasks.requests import bootstrap_request, to_json

    cfg = FlywheelConfig(runs_dir=root, bootstrap={"pretrain_steps": 0})
    recipe = to_json(bootstrap_request(cfg, []))
    recipe.pop("cpu_threads")
    out_root = Path(recipe.pop("out_root"))
    return str(bootstrap(out_root, **recipe | {"progress": False}))


def measure(samples: int = 512, batch_size: int = 32, reps: int = 2) -> dict:
    from bench.bench_packing import training_pairs
    from tasks.requests import sft_request
    from tasks.store import write_parquet
    from tasks.train import train_in_subprocess

    runs: dict[str, list[dict]] = {"local": [], "accelerate": []}
    with tempfile.TemporaryDirectory(prefix="bench-accelerate-") as tmp:
        tmp = Path(tmp)
        model = untrained_policy(tmp)
        write_parquet(training_pairs(samples), tmp / "train.parquet")
        for rep in range(reps):
            for launcher in runs:
                cfg = FlywheelConfig(train=train_settings(launcher, batch_size))
                out = tmp / f"{launcher}-{rep}"
                request = sft_request(cfg, 0, model, tmp / "train.parquet", out)
                load = os.getloadavg()[0]
                result = train_in_subprocess(dataclasses.replace(request, progress=False))
                runs[launcher].append(
                    {k: result[k] for k in KEPT} | {"load_before": round(load, 1)}
                )
    return {
        "model": "untrained default policy (demo shape)",
        "samples": samples,
        "global_batch": batch_size,
        "cores": os.cpu_count(),
        "runs": runs,
    }


def summary(m: dict) -> dict:
    """Means over the reps, and two-process ÷ one-process ratios."""

    def mean(launcher: str, key: str) -> float:
        values = [r[key] for r in m["runs"][launcher]]
        return sum(values) / len(values)

    keys = ("wall_s", "cpu_s", "train_seconds")
    means = {launcher: {k: mean(launcher, k) for k in keys} for launcher in m["runs"]}
    ratios = {k: means["accelerate"][k] / means["local"][k] for k in keys}
    return {"means": means, "accelerate_over_local": ratios}


def cli() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=32, help="global batch (even)")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--out", type=Path, help="write the figures here as JSON")
    args = ap.parse_args()
    if args.batch_size % 2:
        ap.error("--batch-size must be even (two ranks take half each)")
    m = measure(args.samples, args.batch_size, args.reps)
    m["summary"] = summary(m)
    m["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    text = json.dumps(m, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    cli()
