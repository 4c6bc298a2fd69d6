"""Load: many flywheels at once against a Prefect server and an MLflow server on PostgreSQL, then
against the embedded SQLite default; counts the runs that finish and the lock and database
errors each run (and each server) printed.

    python -m bench.bench_load --runs 4                    # PostgreSQL servers, then SQLite
    python -m bench.bench_load --runs 16 --only postgres --timeout 1200

Every run is `flywheel run configs/tiny.yaml` (the end-to-end tests' config, tracking on) with
its own flywheel name and runs folder, all started at once. The base model is made once before
(as the end-to-end tests make it) and every runs folder links to it, so the runs load the
orchestration and tracking stores, not the bootstrap.

- `postgres`: fresh databases per run of this script (`createdb`-like, user postgres, trust
  auth at 127.0.0.1:5432), one `prefect server start` and one `mlflow server` on them
  (artifacts served from a folder), `PREFECT_API_URL` and `MLFLOW_TRACKING_URI` pointing at
  them.
- `sqlite`: no server. Each run starts Prefect's local API itself, on the one Prefect home the
  runs share (a user's `~/.prefect`: one `prefect.db` for all), and writes MLflow to
  `mlflow.db` in its own runs folder.

Not part of `make test`: at 16 runs it takes tens of minutes on 2 cores. The figures are
written to bench/results/<stamp>-load-<runs>.json. On a checkout that others edit, run it from a
snapshot of the committed code (`git archive HEAD | tar -x -C /tmp/snap`, then
`python -m bench.bench_load` in /tmp/snap): a worker started after an edit imports the new code
while its flow process runs the old, and the runs die of that, not of the load.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from flows.servers import (
    Server,
    free_port,
    mlflow_server_cmd,
    mlflow_server_env,
    prefect_server_cmd,
    start,
    stop,
)

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"
PG = "postgres@127.0.0.1:5432"

# What a lock or database failure prints, in the runs' and the servers' output.
ERRORS = {
    "sqlite_locked": r"database is locked",
    "operational_error": r"OperationalError",
    "integrity_error": r"IntegrityError|UniqueViolation|duplicate key value",
    "deadlock": r"deadlock detected",
    "serialization": r"could not serialize access",
    "pool_exhausted": r"QueuePool limit|too many (?:clients|connections)",
    # Raised, not quoted: a rich traceback prints source lines such as `except TimeoutError`.
    "db_timeout": r"(?m)^[\w.]*Timeout(?:Error)?: |asyncpg\.exceptions\.\w*Timeout",
    "http_5xx": r"\b50[0-4]\b (?:Internal Server Error|Service Unavailable|Bad Gateway)",
    "api_unreachable": r"ConnectError|Connection refused|ApiUnavailable",
    # Not the database: MLflow's telemetry thread removing its variable from os.environ while a
    # REST call iterates it (`tasks.tracking` turns telemetry off by default for this reason).
    "mlflow_environ_race": r"KeyError: '_MLFLOW_TELEMETRY_SESSION_ID'",
}


def count_errors(text: str) -> dict[str, int]:
    """Occurrences of every `ERRORS` pattern in `text` (zeros left out)."""
    out = {k: len(re.findall(p, text)) for k, p in ERRORS.items()}
    return {k: v for k, v in out.items() if v}


def create_databases(names: list[str]) -> None:
    import psycopg

    with psycopg.connect(f"postgresql://{PG}/postgres", autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')


def drop_databases(names: list[str]) -> None:
    import psycopg

    with psycopg.connect(f"postgresql://{PG}/postgres", autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def make_base_model(work: Path) -> Path:
    """The tiny config's base model, made once in `work/models` (as `tests/runs.py` makes it for
    the tests)."""
    from tasks.config import load_config
    from tasks.stages import base_model_stage, suite_stage

    models, runs = work / "models", work / "warm"
    models.mkdir(exist_ok=True)
    runs.mkdir(exist_ok=True)
    if not (runs / "models").is_symlink():
        (runs / "models").symlink_to(models)
    cfg = load_config(TINY, runs_dir=str(runs), name="warm")
    base_model_stage.fn(cfg, suite_stage.fn(cfg))
    return models


def run_flywheels(
    count: int, work: Path, models: Path, env: dict, timeout: float, generations: int
) -> list[dict]:
    """`count` tiny flywheels started at once; each one's exit, wall time and error counts."""
    procs = []
    for i in range(count):
        runs = work / f"runs-{i:02d}"
        runs.mkdir()
        (runs / "models").symlink_to(models)
        cmd = [sys.executable, "-m", "flows.cli", "run", str(TINY)]
        cmd += ["--set", f"runs_dir={runs}", "--set", f"name=load-{i:02d}"]
        cmd += ["--generations", str(generations)]
        log = work / f"run-{i:02d}.log"
        procs.append((i, start(cmd, log, env, ROOT), log, time.monotonic()))
    out = []
    deadline = time.monotonic() + timeout
    for i, proc, log, t0 in procs:
        try:
            proc.wait(max(deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            stop(proc)
        text = log.read_text(errors="replace")
        out.append(
            {
                "run": i,
                "returncode": proc.returncode,
                "finished": proc.returncode == 0,
                "timed_out": proc.returncode in (-signal.SIGTERM, -signal.SIGKILL),
                "wall_s": time.monotonic() - t0,
                "errors": count_errors(text),
                "tail": text[-1500:] if proc.returncode else "",
            }
        )
    return out


def base_env(work: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update(
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS="1",
        PREFECT_HOME=str(work / "prefect-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
    )
    return env


def load_postgres(count: int, work: Path, models: Path, timeout: float, gens: int) -> dict:
    stamp = f"{datetime.now(UTC):%Y%m%d%H%M%S}"
    dbs = [f"flywheel_load_prefect_{stamp}", f"flywheel_load_mlflow_{stamp}"]
    create_databases(dbs)
    env = base_env(work)
    p_port, m_port = free_port(), free_port()
    server_env = {
        **env,
        "PREFECT_API_DATABASE_CONNECTION_URL": f"postgresql+asyncpg://{PG}/{dbs[0]}",
        "PREFECT_UI_ENABLED": "false",
    }
    p_api, m_url = f"http://127.0.0.1:{p_port}/api", f"http://127.0.0.1:{m_port}"
    mlflow_cmd = mlflow_server_cmd(
        m_port, f"postgresql+psycopg://{PG}/{dbs[1]}", str(work / "mlartifacts"), workers=4
    )
    servers = {
        "prefect": Server(
            "prefect",
            [*prefect_server_cmd(p_port), "--no-ui"],
            p_api,
            f"{p_api}/health",
            work / "prefect-server.log",
            server_env,
        ),
        "mlflow": Server(
            "mlflow",
            mlflow_cmd,
            m_url,
            f"{m_url}/health",
            work / "mlflow-server.log",
            mlflow_server_env(env),
        ),
    }
    try:
        ready = {name: server.start() for name, server in servers.items()}
        run_env = {**env, "PREFECT_API_URL": p_api, "MLFLOW_TRACKING_URI": m_url}
        t0 = time.monotonic()
        runs = run_flywheels(count, work, models, run_env, timeout, gens)
        wall = time.monotonic() - t0
    finally:
        for server in servers.values():
            server.stop()
        drop_databases(dbs)
    server_errors = {
        name: count_errors((work / f"{name}-server.log").read_text(errors="replace"))
        for name in servers
    }
    return summary("postgres", runs, wall, servers_ready_s=ready, server_errors=server_errors)


def load_sqlite(count: int, work: Path, models: Path, timeout: float, gens: int) -> dict:
    t0 = time.monotonic()
    runs = run_flywheels(count, work, models, base_env(work), timeout, gens)
    return summary("sqlite", runs, time.monotonic() - t0)


def summary(backend: str, runs: list[dict], wall: float, **extra) -> dict:
    errors: dict[str, int] = {}
    for r in runs:
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    return {
        "backend": backend,
        "runs": len(runs),
        "finished": sum(r["finished"] for r in runs),
        "failed": sum(not r["finished"] and not r["timed_out"] for r in runs),
        "timed_out": sum(r["timed_out"] for r in runs),
        "runs_with_errors": sum(bool(r["errors"]) for r in runs),
        "errors": errors,
        "wall_s": wall,
        "per_run": runs,
        **extra,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=4, help="flywheels at once")
    ap.add_argument("--only", choices=("postgres", "sqlite"), default=None)
    ap.add_argument("--generations", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=1200, help="seconds for all runs")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()
    from bench.report import machine_info

    work_root = Path(tempfile.mkdtemp(prefix="bench-load-"))
    results = []
    try:
        t = time.monotonic()
        models = make_base_model(work_root)
        print(f"base model made in {time.monotonic() - t:.0f} s", flush=True)
        backends = [args.only] if args.only else ["postgres", "sqlite"]
        for backend in backends:
            work = work_root / backend
            work.mkdir()
            fn = load_postgres if backend == "postgres" else load_sqlite
            r = fn(args.runs, work, models, args.timeout, args.generations)
            results.append(r)
            print(
                f"{backend}: {r['finished']}/{r['runs']} finished, {r['failed']} failed, "
                f"{r['timed_out']} timed out in {r['wall_s']:.0f} s; errors {r['errors']}"
                + (f"; servers {r['server_errors']}" if "server_errors" in r else ""),
                flush=True,
            )
    finally:
        if not args.keep:
            shutil.rmtree(work_root, ignore_errors=True)
    name = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-load-{args.runs}.json"
    path = ROOT / "bench" / "results" / name
    doc = {
        "machine": machine_info(),
        "config": str(TINY.relative_to(ROOT)),
        "concurrent_runs": args.runs,
        "generations": args.generations,
        "results": results,
    }
    path.write_text(json.dumps(doc, indent=2, default=str))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
