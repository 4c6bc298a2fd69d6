"""Dispatch: what a stage costs when it runs as a Prefect deployment on a work pool
(`cluster.stage_runner: deployment`) rather than inline, per stage.

    python -m bench.bench_dispatch                  # workers at Prefect's default polling (10 s)
    python -m bench.bench_dispatch --query-s 1      # workers asking for work every second

One generation of `configs/cluster.yaml` (the tiny config, tracking off) against a Prefect server
on a fresh PostgreSQL database (127.0.0.1:5432, trust auth; dropped afterwards), with one
`prefect worker start --type process` per pool of the config. Per stage flow run, read back
through the API and the flow's logs:

- `waited_s`: how long the generation flow waited in `run_deployment` (its log line);
- `own_s`: the stage's own wall time from its manifest (the worker processes for generate and
  train, the whole stage for curate and eval);
- `dispatch_s` = waited - own: the overhead of running it on a pool. Split into `queued_s`
  (flow run created -> Running in the worker's flow process: the worker's next poll, its
  process start and the flow's import), `in_run_s` (Running -> Completed, less the stage's task
  run: the stage flow's own start and end) and `noticed_s` (the rest: the flow's next poll of
  the state, `cluster.poll_s`, and the API calls). `task_run_s` is the stage's task run as
  Prefect timed it, beside `own_s`.

`flow_start` is the part no polling setting removes: a fresh process importing Prefect's engine
and loading a stage flow (its wall and CPU seconds), as the worker's flow process does per run.

`LocalCluster` (the server, its database and the workers) is what
`tests/integration/test_stage_deployments.py` runs against as well. Results go to
bench/results/<stamp>-dispatch.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from bench.bench_load import PG, base_env, create_databases, drop_databases, make_base_model
from flows.servers import BIN, kill, prefect_server, start

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "configs" / "cluster.yaml"
RESULTS = ROOT / "bench" / "results"

OWN_WALL = {"seeds": "seconds", "generate": "wall_s", "curate": "seconds", "train": "wall_s"}
"""The manifest output that holds each stage's own wall time (eval: `seconds`)."""

WORKER_GRACE_S = 10
"""How long stopping workers wait for them to exit before killing them."""

WAITED = re.compile(
    r"stage (?P<kind>\w+) on pool '(?P<pool>[^']+)': flow run (?P<name>\S+) completed in "
    r"(?P<waited>[\d.]+) s"
)


class LocalCluster:
    """A Prefect server on a fresh PostgreSQL database and one process worker per pool, on this
    machine; `env` is what clients run with (`PREFECT_API_URL` set). Everything stops, and the
    database is dropped, on exit. `query_s` sets the workers' polling
    (`PREFECT_WORKER_QUERY_SECONDS`; None: Prefect's default, 10 s)."""

    def __init__(
        self, work: Path, pools: Iterable[str], env: dict, query_s: float | None = None
    ) -> None:
        self.work, self.pools, self.query_s = work, sorted(set(pools)), query_s
        self.database = f"fwdispatch_{uuid.uuid4().hex[:8]}_prefect"
        self.base = dict(env)
        self.env: dict = {}
        self.server = None
        self.workers: dict[str, subprocess.Popen] = {}

    def __enter__(self) -> LocalCluster:
        create_databases([self.database])
        try:
            url = f"postgresql+asyncpg://{PG}/{self.database}"
            server_env = self.base | {"PREFECT_SERVER_DATABASE_CONNECTION_URL": url}
            self.server = prefect_server(self.work / "prefect-server", server_env)
            self.server.start()
            # Workers and their flow processes import this checkout, whatever else is installed.
            self.env = self.base | {"PREFECT_API_URL": self.server.url, "PYTHONPATH": str(ROOT)}
            worker_env = dict(self.env)
            if self.query_s is not None:
                worker_env["PREFECT_WORKER_QUERY_SECONDS"] = str(self.query_s)
            for pool in self.pools:
                cmd = [str(BIN / "prefect"), "worker", "start", "--pool", pool]
                cmd += ["--type", "process", "--name", f"worker-{pool}"]
                self.workers[pool] = start(cmd, self.worker_log(pool), worker_env, ROOT)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        # Each worker's process group (the flow processes it started go with it), all at once:
        # a worker takes its time to stop, and one after the other they add up.
        for proc in self.workers.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + WORKER_GRACE_S
        for proc in self.workers.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(deadline - time.monotonic(), 0.1))
            kill(proc)  # still there after the grace (a no-op for one that stopped)
        if self.server is not None:
            self.server.stop()
        drop_databases([self.database])

    @property
    def api(self) -> str:
        return self.server.url

    def worker_log(self, pool: str) -> Path:
        return self.work / f"worker-{pool}.log"


def _post(api: str, path: str, body: dict) -> list[dict]:
    import httpx

    out, offset = [], 0
    while True:
        r = httpx.post(f"{api}{path}", json=body | {"limit": 200, "offset": offset}, timeout=60)
        r.raise_for_status()
        page = r.json()
        out += page
        if len(page) < 200:
            return out
        offset += 200


def stage_runs(api: str, flywheel: str) -> list[dict]:
    """Every stage flow run of flywheel `flywheel` (read through the API): stage kind, name,
    id, work pool, final state and times."""
    runs = _post(api, "/flow_runs/filter", {"flow_runs": {"name": {"like_": f"{flywheel}/"}}})
    out = []
    for r in runs:
        kinds = [t.removeprefix("stage:") for t in r["tags"] if t.startswith("stage:")]
        if r["deployment_id"] is None or not kinds:
            continue
        out.append(
            {
                "kind": kinds[0],
                "name": r["name"],
                "id": r["id"],
                "pool": r["work_pool_name"],
                "state": r["state"]["type"],
                "created": r["created"],
                "start_time": r["start_time"],
                "end_time": r["end_time"],
            }
        )
    return sorted(out, key=lambda r: r["created"])


def _seconds(a: str, b: str) -> float:
    return (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds()


def dispatch_figures(api: str, flywheel: str, flywheel_dir: Path) -> list[dict]:
    """Per stage flow run: waited, own, dispatch and its parts (see the module's docstring)."""
    from tasks import store

    runs = stage_runs(api, flywheel)
    waited = {
        m["name"]: float(m["waited"])
        for log in _post(api, "/logs/filter", {"logs": {"level": {"ge_": 20}}})
        if (m := WAITED.search(log["message"]))
    }
    ids = [r["id"] for r in runs]
    tasks = {
        t["flow_run_id"]: t["total_run_time"]
        for t in _post(api, "/task_runs/filter", {"flow_runs": {"id": {"any_": ids}}})
        if t["state"] and t["state"]["type"] == "COMPLETED"
    }
    out = []
    for r in runs:
        _, gen, stage = r["name"].split("/")
        outputs = store.read_manifest(flywheel_dir / gen / stage).outputs
        own = float(outputs[OWN_WALL.get(r["kind"], "seconds")])
        wait = waited[r["name"]]
        run_s = _seconds(r["start_time"], r["end_time"])
        queued = _seconds(r["created"], r["start_time"])
        task_s = tasks.get(r["id"], run_s)
        out.append(
            r
            | {
                "waited_s": round(wait, 2),
                "own_s": round(own, 2),
                "task_run_s": round(task_s, 2),
                "dispatch_s": round(wait - own, 2),
                "queued_s": round(queued, 2),
                "in_run_s": round(run_s - task_s, 2),
                "noticed_s": round(wait - queued - run_s, 2),
            }
        )
    return out


def flow_start_cost(repeats: int = 3) -> dict:
    """What every dispatch pays whatever the polling: a fresh `python -m prefect.engine`-like
    process importing Prefect's engine and loading a stage flow from its entrypoint (wall and
    CPU seconds of the process; the lowest of `repeats`)."""
    code = (
        "import prefect.engine\n"
        "from prefect.flows import load_flow_from_entrypoint\n"
        "load_flow_from_entrypoint('flows/stage_flows.py:generate_flow')\n"
    )
    walls, cpus = [], []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
        walls.append(time.monotonic() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return {"wall_s": round(min(walls), 2), "cpu_s": round(min(cpus), 2), "repeats": repeats}


def run_once(work: Path, models: Path, query_s: float | None, timeout: float) -> dict:
    """One generation of configs/cluster.yaml on a fresh local cluster; its figures."""
    from tasks.config import load_config

    runs = work / "runs"
    runs.mkdir()
    (runs / "models").symlink_to(models)
    sets = [f"runs_dir={runs}", "name=dispatch", "generations=1", "tracking.enabled=false"]
    args = [a for s in sets for a in ("--set", s)]
    pools = load_config(CLUSTER).cluster.pools.model_dump().values()
    env = base_env(work)
    with LocalCluster(work, [p for p in pools if p], env, query_s) as cluster:
        cli = [sys.executable, "-m", "flows.cli"]
        subprocess.run(
            [*cli, "deploy-stages", str(CLUSTER), *args],
            env=cluster.env,
            cwd=ROOT,
            check=True,
            capture_output=True,
            timeout=600,
        )
        t0 = time.monotonic()
        r = subprocess.run(
            [*cli, "run", str(CLUSTER), *args],
            env=cluster.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        wall = time.monotonic() - t0
        if r.returncode != 0:
            raise RuntimeError(f"flywheel run failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        stages = dispatch_figures(cluster.api, "dispatch", runs / "dispatch")
    return {
        "query_s": query_s,
        "run_wall_s": round(wall, 1),
        "load_1min_after": round(os.getloadavg()[0], 1),  # the machine is shared: its load
        "stages": stages,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--query-s", type=float, action="append", help="worker polling (repeat)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per flywheel run")
    ap.add_argument("--no-save", action="store_true")
    a = ap.parse_args()
    from bench.report import machine_info

    machine = machine_info()  # the load when it starts; each round records its own after
    start_cost = flow_start_cost()
    rounds = []
    with tempfile.TemporaryDirectory(prefix="bench-dispatch-") as tmp:
        work = Path(tmp)
        models = make_base_model(work)
        for query_s in a.query_s or [None]:
            (work / f"q{query_s}").mkdir()
            rounds.append(run_once(work / f"q{query_s}", models, query_s, a.timeout))
    for rnd in rounds:
        q = rnd["query_s"] or "default (10)"
        print(f"worker polling {q} s; flywheel run {rnd['run_wall_s']} s")
        print(
            f"  {'stage':<24} {'pool':<10} {'waited':>7} {'own':>7} {'dispatch':>8} {'queued':>7}"
        )
        for s in rnd["stages"]:
            print(
                f"  {s['name']:<24} {s['pool']:<10} {s['waited_s']:>7.1f} {s['own_s']:>7.1f} "
                f"{s['dispatch_s']:>8.1f} {s['queued_s']:>7.1f}"
            )
        per = [s["dispatch_s"] for s in rnd["stages"]]
        print(
            f"  dispatch per stage: mean {sum(per) / len(per):.1f} s, {min(per):.1f}-{max(per):.1f}"
        )
    print(
        f"a stage flow's process start: {start_cost['wall_s']} s wall, {start_cost['cpu_s']} CPU-s"
    )
    doc = {"bench": "dispatch", "machine": machine, "flow_start": start_cost, "rounds": rounds}
    if not a.no_save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        out = RESULTS / f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-dispatch.json"
        out.write_text(json.dumps(doc, indent=2))
        print(f"saved {out}")


if __name__ == "__main__":
    main()
