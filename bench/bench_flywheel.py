"""A real small flywheel run, read back from its stage manifests: orchestration overhead (P2),
curation ÷ generation time (P3) and engine start-up share (P6). Learning efficiency (P7) has its
own benchmark, `bench.bench_p7`, which reads its runs with this module's helpers.

The flow runs in this process exactly as `flywheel run` runs it (Prefect's ephemeral API,
MLflow on a SQLite file, tracking on), in a fresh Prefect home. Its wall time is split into
time inside worker processes (`tasks.subproc.WORKER_WALL`: bootstrap, generate, train, eval),
the in-process pure stage work the manifests time (seeds, curate), and the rest: orchestration
(Prefect, MLflow, storage, reports).

    python -m bench.bench_flywheel                       # configs/bench.yaml
    python -m bench.bench_flywheel --config configs/demo.yaml
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "configs" / "bench.yaml"


def stage_outputs(folder: Path) -> dict:
    """A stage folder's manifest outputs ({} when the stage has not landed)."""
    from tasks import store

    m = store.read_manifest(folder)
    return m.outputs if m else {}


def isolate_services(folder: Path) -> None:
    """Before Prefect is imported: a Prefect home of the benchmark's own (its ephemeral API's
    database), no telemetry, and MLflow on the run's own SQLite file."""
    (folder / "prefect-home").mkdir(parents=True, exist_ok=True)
    os.environ["PREFECT_HOME"] = str(folder / "prefect-home")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.pop("MLFLOW_TRACKING_URI", None)


def stage_timings(flywheel_dir: Path, generations: int) -> dict:
    """Seconds per stage kind, summed over generations, from the manifests."""
    from tasks import store

    t = {
        "generate_wall_s": 0.0,
        "engine_load_s": 0.0,
        "decode_s": 0.0,
        "generate_stages": 0,
        "samples": 0,
        "curate_s": 0.0,
        "seeds_pure_s": 0.0,
        "train_wall_s": 0.0,
        "eval_wall_s": 0.0,
    }
    for g in range(0, generations + 1):
        evaluated = stage_outputs(store.gen_dir(flywheel_dir, g) / "eval")
        t["eval_wall_s"] += evaluated["generate"]["wall_s"]
        if g == 0:
            continue
        gen = stage_outputs(store.stage_dir(flywheel_dir, g, "generate"))
        t["generate_wall_s"] += gen["wall_s"]
        t["engine_load_s"] += gen["engine_load_s"]
        t["decode_s"] += gen["generate_s"]
        t["generate_stages"] += 1
        t["samples"] += gen["samples"]
        t["curate_s"] += stage_outputs(store.stage_dir(flywheel_dir, g, "curate"))["seconds"]
        seeds = stage_outputs(store.stage_dir(flywheel_dir, g, "seeds"))
        t["seeds_pure_s"] += seeds["seconds"] - seeds.get("model_generate", {}).get("wall_s", 0.0)
        tr = stage_outputs(store.stage_dir(flywheel_dir, g, "train"))
        t["train_wall_s"] += tr["wall_s"]
    return t


def main(request: dict) -> dict:
    """Worker: run the flywheel on `config` under `tmp`; return figures."""
    tmp = Path(request["tmp"])
    isolate_services(tmp)
    from flows.flywheel import flywheel
    from flows.local_api import ensure_api
    from tasks import subproc
    from tasks.config import load_config

    cfg = load_config(
        request["config"], runs_dir=str(tmp / "runs"), name="bench", **request.get("set", {})
    )
    G = cfg.generations
    t0, wall0 = time.perf_counter(), time.time()
    ensure_api()  # as `flywheel run` starts it: with a start-up budget that fits a busy machine
    flywheel(cfg)
    flow_s = time.perf_counter() - t0
    # Until the first stage lands: Prefect's API and MLflow's database starting up.
    from tasks import store

    startup_s = store.read_manifest(cfg.flywheel_dir / "suite").created - wall0
    workers = list(subproc.WORKER_WALL)
    timings = stage_timings(cfg.flywheel_dir, G)
    worker_s = sum(s for _, s in workers)
    pure_s = timings["seeds_pure_s"] + timings["curate_s"]
    return {
        "config": str(request["config"]),
        "generations": G,
        "flow_s": flow_s,
        "startup_s": startup_s,
        "worker_s": worker_s,
        "workers": [[m, round(s, 2)] for m, s in workers],
        "pure_s": pure_s,
        "overhead_s": flow_s - worker_s - pure_s,
        "timings": timings,
    }


def measure(config: Path = DEFAULT_CONFIG, sets: dict | None = None):
    from tasks.subproc import run_worker

    with tempfile.TemporaryDirectory(prefix="bench-flywheel-") as tmp:
        return run_worker(
            "bench.bench_flywheel",
            {"config": str(config), "tmp": tmp, "set": sets or {}},
            Path(tmp) / "bench.log",
        )


def ratios(m: dict) -> list:
    from bench.report import Goal, Ratio, ratio

    t = m["timings"]
    gens = m["generations"]
    out = [
        Ratio(
            "P2",
            "orchestration overhead ÷ generation wall time",
            ratio(m["overhead_s"], t["generate_wall_s"]),
            Goal("<=", 0.03),
            unit="%",
            detail=f"({m['flow_s']:.1f} s flow - {m['worker_s']:.1f} s in workers - "
            f"{m['pure_s']:.1f} s seeds/curate) ÷ {t['generate_wall_s']:.1f} s in {gens} "
            f"generate stage(s); {m['config']}",
        ),
        Ratio(
            "P2",
            "per-generation overhead (no start-up) ÷ generation wall time",
            ratio(m["overhead_s"] - m["startup_s"], t["generate_wall_s"]),
            Goal("<=", 0.03),
            unit="%",
            detail=f"({m['overhead_s']:.1f} - {m['startup_s']:.1f} s start-up) ÷ "
            f"{t['generate_wall_s']:.1f} s: what a long-lived Prefect server and MLflow "
            "database leave",
        ),
        Ratio(
            "P2",
            "orchestration overhead ÷ flow wall time",
            ratio(m["overhead_s"], m["flow_s"]),
            None,
            unit="%",
            detail=f"{m['overhead_s']:.1f} s ÷ {m['flow_s']:.1f} s; {m['startup_s']:.1f} s of it "
            "before the first stage (Prefect API + MLflow database start)",
        ),
        Ratio(
            "P3",
            "curation time ÷ generation time (flywheel, same samples)",
            ratio(t["curate_s"], t["generate_wall_s"]),
            Goal("<=", 0.05),
            unit="%",
            detail=f"curate {t['curate_s']:.2f} s ÷ generate {t['generate_wall_s']:.1f} s, "
            f"{t['samples']:,} samples",
        ),
        Ratio(
            "P6",
            "generate stage wall ÷ pure phases (flywheel)",
            ratio(t["generate_wall_s"], t["engine_load_s"] + t["decode_s"]),
            None,
            detail=f"{t['generate_wall_s']:.1f} s ÷ (load {t['engine_load_s']:.1f} + decode "
            f"{t['decode_s']:.1f} s); {t['generate_stages']} stage(s), one engine start each",
        ),
    ]
    return out


def cli() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    args = ap.parse_args()
    m = measure(args.config)
    for r in ratios(m):
        print(f"{r.key} {r.name}: {r.value}  ({r.detail})")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1].endswith(".json"):
        from tasks.subproc import worker_main

        worker_main(main)
    else:
        cli()
