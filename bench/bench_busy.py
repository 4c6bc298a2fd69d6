"""A busy laptop: the policy bootstrap and one SFT stage while other processes hold the cores,
this tree against an earlier commit's (torch's default threads), side by side.

Both trees run the same work through their own code: the bootstrap worker (`tasks.bootstrap`)
on the demo's recipe with fewer pretraining steps, and the SFT worker (`tasks.train`) on the
tests' small SFT settings (200 arith pairs, `--epochs` of 7 steps) over an untrained policy of
the demo's shape. `--load` busy-loop processes keep the cores busy the whole time. The runs are
interleaved, before then after, `--rounds` times (A B A B), so the other work on the machine
falls on both alike; every run is reported, and the ratio is before ÷ after of the mean wall
time (above 1: this tree is faster). `OMP_NUM_THREADS` is removed from the workers'
environment, and neither tree's config sets a thread count: each picks its own.

    git worktree add /tmp/busy-before <commit>   # the tree to compare against
    ln -s $PWD/.venv /tmp/busy-before/.venv
    python -m bench.bench_busy --before /tmp/busy-before --rounds 2 --steps 40 --epochs 2

The JSON goes to bench/results/<stamp>-busy.json, rewritten after every run. `--api` instead
starts Prefect's local API the way each tree does (`flows.local_api.ensure_api` here, Prefect's
own 20 s budget before), `--rounds` times each, into <stamp>-busy-api.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Run inside a tree (cwd = the tree, so `tasks` is that tree's): one worker, its cost as JSON.
DRIVER = r"""
import dataclasses, json, random, sys
from pathlib import Path
import tasks
from tasks.config import FlywheelConfig, load_config
from tasks.requests import bootstrap_request, sft_request, to_json
from tasks.subproc import run_worker

a = json.loads(sys.argv[1])
out = Path(a["out"])
assert Path(tasks.__file__).resolve().is_relative_to(Path.cwd().resolve()), tasks.__file__
if a["job"] == "bootstrap":
    cfg = load_config(a["config"], **{"bootstrap.pretrain_steps": a["steps"]})
    req = dataclasses.replace(
        bootstrap_request(cfg, []), out_root=str(out), progress=False
    )
    res = run_worker("tasks.bootstrap", to_json(req), log_path=out / "worker.log")
else:
    train = dict(learning_rate=3e-3, epochs=a["epochs"], batch_size=32, grad_accum=1,
                 warmup_ratio=0.05, scheduler="cosine", max_length=128, bf16=False, seed=0)
    req = sft_request(FlywheelConfig(train=train), 0, a["model"], Path(a["data"]), out / "model")
    req = dataclasses.replace(req, progress=False)
    res = run_worker("tasks.train", {"mode": req.mode, **to_json(req)}, log_path=out / "worker.log")
print("RESULT " + json.dumps({k: res[k] for k in ("wall_s", "cpu_s")} | {"path": res.get("path")}))
"""

# Prefect's local API started the way each tree starts it: this tree through `ensure_api` (its
# budget), the earlier one as Prefect's client does on a flow's first call (Prefect's 20 s).
API_DRIVER = r"""
import json, time
t = time.perf_counter()
try:
    from flows.local_api import ensure_api
except ImportError:
    from prefect.server.api.server import SubprocessASGIServer
    ensure_api = lambda: SubprocessASGIServer().start()
try:
    ensure_api()
    error = None
except Exception as e:
    error = f"{type(e).__name__}: {str(e)[:200]}"
print("RESULT " + json.dumps({"wall_s": time.perf_counter() - t, "error": error}))
"""

BUSY_LOOP = "while True: pass"
THREADS_LINE = re.compile(r"torch threads: .*")


def git_commit(tree: Path) -> str:
    return subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def run_job(tree: Path, job: dict, out: Path) -> dict:
    """One worker run by `tree`'s own code; its wall and CPU seconds and thread line."""
    out.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["PYTHONPATH"] = str(tree)
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps({**job, "out": str(out)})],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{job['job']} in {tree} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.split("RESULT ", 1)[1])
    log = (out / "worker.log").read_text(errors="replace")
    line = THREADS_LINE.search(log)
    return {**result, "threads": line.group(0) if line else "torch default (no line)"}


def api_start(tree: Path, home: Path) -> dict:
    """One start of the local Prefect API by `tree`'s code, in a fresh Prefect home, no server
    configured and no budget set: its seconds, or the error that ended it."""
    home.mkdir(parents=True)
    drop = ("PREFECT_API_URL", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env |= {"PYTHONPATH": str(tree), "PREFECT_HOME": str(home)}
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    proc = subprocess.run(
        [sys.executable, "-c", API_DRIVER], cwd=tree, env=env, capture_output=True, text=True
    )
    return json.loads(proc.stdout.split("RESULT ", 1)[1])


def summarize(runs: list[dict]) -> dict:
    """Per job: every run's wall seconds by side, and before ÷ after of the means (None until
    both sides have a run)."""
    summary = {}
    for job in ("bootstrap", "sft"):
        walls = {
            side: [x["wall_s"] for x in runs if x["job"] == job and x["side"] == side]
            for side in ("before", "after")
        }
        cpus = {
            side: [x["cpu_s"] for x in runs if x["job"] == job and x["side"] == side]
            for side in ("before", "after")
        }
        both = all(walls.values())
        summary[job] = {
            "before_wall_s": walls["before"],
            "after_wall_s": walls["after"],
            "before_cpu_s": cpus["before"],
            "after_cpu_s": cpus["after"],
            "before_over_after": round(
                statistics.mean(walls["before"]) / statistics.mean(walls["after"]), 2
            )
            if both
            else None,
        }
    return summary


def measure(
    before: Path,
    after: Path,
    rounds: int,
    steps: int,
    epochs: float,
    load: int,
    config: Path,
    save: Callable[[dict], None],
) -> dict:
    """Run the comparison; `save` gets the document so far after every run (a long run on a
    loaded machine keeps what it measured if it is stopped)."""
    from bench.bench_packing import training_pairs
    from tasks.store import write_parquet

    trees = {"before": before.resolve(), "after": after.resolve()}
    doc: dict = {
        "before_commit": git_commit(before),
        "after_commit": git_commit(after),
        "busy_loops": load,
        "rounds": rounds,
        "bootstrap_steps": steps,
        "sft_epochs": epochs,
        "config": str(config.relative_to(ROOT)),
        "runs": [],
        "summary": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench-busy-") as tmp:
        tmp = Path(tmp)
        data = tmp / "train.parquet"
        write_parquet(training_pairs(200, levels=(2,)), data)
        # The SFT's base: an untrained policy of the demo's shape (0 steps), made once, untimed.
        base = run_job(
            trees["after"], {"job": "bootstrap", "config": str(config), "steps": 0}, tmp / "base"
        )
        busy = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(load)]
        try:
            time.sleep(2)  # let the load show in /proc/stat
            for r in range(rounds):
                for job in (
                    {"job": "bootstrap", "config": str(config), "steps": steps},
                    {"job": "sft", "model": base["path"], "data": str(data), "epochs": epochs},
                ):
                    for side, tree in trees.items():
                        started = time.time()
                        load_before = round(os.getloadavg()[0], 2)
                        res = run_job(tree, job, tmp / f"{job['job']}-{side}-{r}")
                        res |= {"job": job["job"], "side": side, "round": r + 1}
                        res["load_avg"] = [load_before, round(os.getloadavg()[0], 2)]
                        res["started"] = time.strftime("%H:%M:%S", time.gmtime(started))
                        doc["runs"].append(res)
                        doc["summary"] = summarize(doc["runs"])
                        save(doc)
                        print(
                            f"round {r + 1} {job['job']:9} {side:6} wall {res['wall_s']:7.1f} s "
                            f"cpu {res['cpu_s']:7.1f} s  load {res['load_avg']}  "
                            f"{res['threads']}",
                            flush=True,
                        )
        finally:
            for p in busy:
                p.kill()
                p.wait()
    return doc


def cli() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, required=True, help="worktree of the earlier commit")
    ap.add_argument("--after", type=Path, default=ROOT, help="the tree to test (default: this)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=40, help="bootstrap pretraining steps")
    ap.add_argument("--epochs", type=float, default=2.0, help="SFT epochs (7 steps each)")
    ap.add_argument("--load", type=int, default=2, help="busy-loop processes")
    ap.add_argument("--config", type=Path, default=ROOT / "configs/demo.yaml")
    ap.add_argument(
        "--api", action="store_true", help="only the local Prefect API's start, each tree"
    )
    args = ap.parse_args()
    from bench.report import machine_info

    machine = machine_info()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    if args.api:
        path = ROOT / "bench" / "results" / f"{stamp}-busy-api.json"
        trees = {"before": args.before.resolve(), "after": args.after.resolve()}
        busy = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(args.load)]
        runs = []
        try:
            with tempfile.TemporaryDirectory(prefix="bench-busy-api-") as tmp:
                for r in range(args.rounds):
                    for side, tree in trees.items():
                        load = round(os.getloadavg()[0], 2)
                        res = api_start(tree, Path(tmp) / f"{side}-{r}")
                        runs.append({"side": side, "round": r + 1, "load_avg": load, **res})
                        print(runs[-1], flush=True)
        finally:
            for p in busy:
                p.kill()
                p.wait()
        doc = {"machine": machine, "busy_loops": args.load, "runs": runs}
        doc |= {"before_commit": git_commit(args.before), "after_commit": git_commit(args.after)}
        path.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {path.relative_to(ROOT)}")
        return
    path = ROOT / "bench" / "results" / f"{stamp}-busy.json"

    def save(doc: dict) -> None:
        path.write_text(json.dumps({"machine": machine, **doc}, indent=2) + "\n")

    m = measure(
        args.before,
        args.after,
        args.rounds,
        args.steps,
        args.epochs,
        args.load,
        args.config.resolve(),
        save,
    )
    for job, s in m["summary"].items():
        print(
            f"{job}: before {s['before_wall_s']} s, after {s['after_wall_s']} s: "
            f"before ÷ after {s['before_over_after']}x"
        )
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    cli()
