"""What an `mlflow server` costs to start, with MLflow's job runner and without it.

MLflow 3's server starts a job runner and task-queue consumers (`huey`) for its GenAI jobs unless
`MLFLOW_SERVER_ENABLE_JOB_EXECUTION` is false; `flows.servers` turns it off by default. Each
round starts one server on a fresh SQLite store both ways, in turn, and reads the machine's busy
CPU seconds (/proc/stat, so every process the server starts counts) from the start until
`--idle` seconds after it answers, and the resident memory of its job processes.

    python -m bench.bench_mlflow_server --rounds 2 --save   # bench/results/<stamp>-mlflow-jobs.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from bench.proc_cpu import busy_cpu_s
from flows.servers import mlflow_server

ROOT = Path(__file__).resolve().parents[1]
JOB_PROCESSES = ("huey_consumer", "_job_runner")


def job_processes_rss_mib() -> tuple[int, float]:
    """How many job processes run now, and their resident memory together."""
    out = subprocess.run(["ps", "-eo", "rss=,args="], capture_output=True, text=True).stdout
    rss = [int(line.split(None, 1)[0]) for line in out.splitlines() if any(
        name in line for name in JOB_PROCESSES
    )]  # fmt: skip
    return len(rss), sum(rss) / 1024


def one_start(jobs: bool, idle_s: float) -> dict:
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": str(jobs).lower()}
    with tempfile.TemporaryDirectory() as tmp:
        server = mlflow_server(Path(tmp), env=env)
        before = busy_cpu_s()
        healthy_s = server.start()
        try:
            time.sleep(idle_s)
            cpu = busy_cpu_s() - before
            n, rss = job_processes_rss_mib()
        finally:
            server.stop()
    return {"jobs": jobs, "healthy_s": round(healthy_s, 1), "busy_cpu_s": round(cpu, 1),
            "job_processes": n, "job_rss_mib": round(rss)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--idle", type=float, default=20.0, help="seconds measured after it answers")
    ap.add_argument("--save", action="store_true")
    args = ap.parse_args()
    runs = [one_start(jobs, args.idle) for _ in range(args.rounds) for jobs in (True, False)]
    for r in runs:
        print(
            f"job runner {'on ' if r['jobs'] else 'off'}: answered in {r['healthy_s']:5.1f} s, "
            f"{r['busy_cpu_s']:5.1f} busy CPU-s by {args.idle:.0f} s later, "
            f"{r['job_processes']} job processes ({r['job_rss_mib']} MiB)"
        )
    mean = {
        on: sum(r["busy_cpu_s"] for r in runs if r["jobs"] == on) / args.rounds
        for on in (True, False)
    }
    print(f"busy CPU-s per start, on ÷ off: {mean[True] / mean[False]:.1f}×")
    if args.save:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        path = ROOT / "bench" / "results" / f"{stamp}-mlflow-jobs.json"
        means = {"job_runner_on": mean[True], "job_runner_off": mean[False]}
        doc = {"idle_s": args.idle, "runs": runs, "mean_busy_cpu_s": means}
        path.write_text(json.dumps(doc, indent=1) + "\n")
        print(path.relative_to(ROOT))


if __name__ == "__main__":
    main()
