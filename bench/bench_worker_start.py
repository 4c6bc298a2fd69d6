"""Worker start: the tiny flywheel with every worker forked from the fork server
(`FLYWHEEL_WORKER_START=fork`, the default) against a fresh interpreter per worker (`exec`).

    python -m bench.bench_worker_start              # 2 runs of each, alternated
    python -m bench.bench_worker_start --runs 1

Each run is `flywheel run configs/tiny.yaml` (2 generations, 9 workers) in its own runs folder
and Prefect home, all sharing one base model made beforehand, so a run measures the loop alone.
Per run: wall seconds, CPU seconds of the run and everything it started (RUSAGE_CHILDREN), and
the workers' own wall seconds read back from the manifests. The modes alternate (exec, fork,
exec, fork, ...) so a drift in the machine's load falls on both. Results go to
bench/results/<stamp>-worker-start.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from statistics import median

from bench.bench_load import base_env, make_base_model

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"
RESULTS = ROOT / "bench" / "results"


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _worker_walls(flywheel: Path) -> list[float]:
    """Every worker's wall seconds recorded in the run's manifests (`wall_s`, at any depth)."""
    walls: list[float] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "wall_s" and isinstance(v, int | float):
                    walls.append(float(v))
                else:
                    walk(v)

    for manifest in sorted(flywheel.glob("gen-*/*/manifest.json")):
        walk(json.loads(manifest.read_text()).get("outputs", {}))
    return walls


def one_run(mode: str, work: Path, models: Path, index: int) -> dict:
    runs = work / f"{mode}-{index}"
    runs.mkdir()
    (runs / "models").symlink_to(models)
    env = base_env(runs)
    env["FLYWHEEL_WORKER_START"] = mode
    cmd = [sys.executable, "-m", "flows.cli", "run", str(TINY), "--set", f"runs_dir={runs}"]
    cpu0, t0 = _children_cpu(), time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} run {index} failed:\n{proc.stderr[-3000:]}")
    workers = _worker_walls(runs / "tiny")
    return {
        "mode": mode,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "workers": len(workers),
        "worker_wall_s": round(sum(workers), 2),
    }


def measure(runs: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-worker-start-") as tmp:
        work = Path(tmp)
        models = make_base_model(work)
        rows = [one_run(mode, work, models, i) for i in range(runs) for mode in ("exec", "fork")]
    by = {m: [r for r in rows if r["mode"] == m] for m in ("exec", "fork")}
    med = {
        m: {k: median(r[k] for r in rs) for k in ("wall_s", "cpu_s", "worker_wall_s")}
        for m, rs in by.items()
    }
    return {
        "runs": rows,
        "median": med,
        "wall_ratio_exec_over_fork": round(med["exec"]["wall_s"] / med["fork"]["wall_s"], 2),
        "cpu_ratio_exec_over_fork": round(med["exec"]["cpu_s"] / med["fork"]["cpu_s"], 2),
    }


def ratios(m: dict) -> list:
    from bench.report import Goal, Ratio

    e, f = m["median"]["exec"], m["median"]["fork"]
    return [
        Ratio(
            "W1",
            "tiny flywheel wall, fresh-interpreter workers ÷ forked workers",
            m["wall_ratio_exec_over_fork"],
            Goal(">=", 2.0),
            detail=f"{e['wall_s']:.1f} s ÷ {f['wall_s']:.1f} s; CPU {e['cpu_s']:.1f} s ÷ "
            f"{f['cpu_s']:.1f} s ({m['cpu_ratio_exec_over_fork']}x)",
        )
    ]


def run(sizes: dict) -> object:
    """`bench.run_all`'s entry: `sizes["worker_start_runs"]` runs of each way (default 2)."""
    from bench.report import BenchResult

    t0 = time.perf_counter()
    m = measure(sizes.get("worker_start_runs", 2))
    return BenchResult("worker_start", ratios(m), m, time.perf_counter() - t0)


def main() -> None:
    from bench.report import machine_info

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2, help="runs of each mode")
    args = ap.parse_args()
    machine = machine_info()
    m = measure(args.runs)
    for r in m["runs"]:
        print(
            f"{r['mode']:5}  wall {r['wall_s']:7.1f} s  cpu {r['cpu_s']:7.1f} s  "
            f"{r['workers']} workers, {r['worker_wall_s']:.1f} s of worker wall"
        )
    print(
        f"exec ÷ fork (medians): wall {m['wall_ratio_exec_over_fork']}x, "
        f"CPU {m['cpu_ratio_exec_over_fork']}x"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-worker-start.json"
    out.write_text(json.dumps({"machine": machine, **m}, indent=2) + "\n")
    print(out)


if __name__ == "__main__":
    main()
