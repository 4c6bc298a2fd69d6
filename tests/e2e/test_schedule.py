"""Scheduling against real servers: a Prefect server and an MLflow tracking server, started by
the test. `flywheel serve` deploys the tiny config on an interval; the schedule fires until two
runs have completed, each advancing the same flywheel by one generation from its champion.
Both are read back through the servers' REST APIs. `flywheel deploy` registers a cron
deployment for a work pool, read back the same way."""

import sys
import time
from pathlib import Path

import httpx
import pytest

from flows import servers as srv
from tests.runs import ROOT, TINY, flywheel

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def servers(tmp_path_factory, shell_env):
    """One Prefect server (with its scheduler) and one MLflow server for the file's two tests
    (`tests/conftest.py` runs the file on one worker); their deployments have distinct names."""
    tmp_path = tmp_path_factory.mktemp("schedule-servers")
    env = dict(shell_env, PREFECT_HOME=str(tmp_path / "prefect-server"))
    env["PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS"] = "2"
    env["PREFECT_RUNNER_POLL_FREQUENCY"] = "2"
    prefect = srv.prefect_server(Path(env["PREFECT_HOME"]), env)
    mlflow = srv.mlflow_server(tmp_path / "mlflow-server", env)
    try:
        prefect.start()
        mlflow.start()
        yield {**env, "PREFECT_API_URL": prefect.url, "MLFLOW_TRACKING_URI": mlflow.url}
    finally:
        prefect.kill()
        mlflow.kill()


def _completed_runs(api: str, deployment: str) -> list[dict]:
    r = httpx.post(
        f"{api}/flow_runs/filter",
        json={
            "deployments": {"name": {"any_": [deployment]}},
            "flow_runs": {"state": {"type": {"any_": ["COMPLETED", "FAILED", "CRASHED"]}}},
            "sort": "EXPECTED_START_TIME_ASC",
        },
        timeout=30,
    )
    r.raise_for_status()
    return r.json()


def test_schedule_fires_twice_and_continues_the_flywheel(servers, runs_dir, tmp_path):
    env, api, tracking = servers, servers["PREFECT_API_URL"], servers["MLFLOW_TRACKING_URI"]
    name = "scheduled"
    serve = srv.start(
        [
            sys.executable,
            "-m",
            "flows.cli",
            "serve",
            str(TINY),
            "--interval",
            "10",
            "--set",
            f"runs_dir={runs_dir}",
            "--set",
            f"name={name}",
        ],
        tmp_path / "serve.log",
        env,
        ROOT,
    )
    try:
        deadline = time.time() + 900
        runs: list[dict] = []
        while time.time() < deadline and len(runs) < 2:
            assert serve.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                runs = _completed_runs(api, name)
            except httpx.TimeoutException:
                pass  # a busy 2-core machine can stall one poll; the deadline still bounds the wait
            time.sleep(3)
    finally:
        srv.kill(serve)
    log = (tmp_path / "serve.log").read_text()[-3000:]
    assert len(runs) >= 2, log
    first, second = runs[:2]
    assert [r["state"]["type"] for r in (first, second)] == ["COMPLETED", "COMPLETED"], log
    assert all(r["parameters"]["advance"] == 1 for r in (first, second))
    assert second["start_time"] >= first["end_time"]  # never overlapping

    fw = runs_dir / name
    for g in (1, 2):
        assert (fw / f"gen-{g:04d}" / "gate" / "manifest.json").is_file()
    assert not (fw / "gen-0003" / "gate" / "manifest.json").exists() or len(runs) > 2

    exp = httpx.get(
        f"{tracking}/api/2.0/mlflow/experiments/get-by-name",
        params={"experiment_name": name},
        timeout=30,
    ).json()["experiment"]
    found = httpx.post(
        f"{tracking}/api/2.0/mlflow/runs/search",
        json={
            "experiment_ids": [exp["experiment_id"]],
            "filter": "tags.`flywheel.role` = 'generation'",
        },
    ).json()["runs"]
    gens = {
        next(t["value"] for t in r["data"]["tags"] if t["key"] == "flywheel.generation"): r
        for r in found
    }
    assert {"1", "2"} <= set(gens)
    assert gens["1"]["info"]["status"] == gens["2"]["info"]["status"] == "FINISHED"
    versions = httpx.get(
        f"{tracking}/api/2.0/mlflow/registered-models/get", params={"name": name}
    ).json()["registered_model"]
    assert versions["name"] == name


def test_deploy_registers_a_cron_deployment_for_a_work_pool(servers, runs_dir):
    env, api = servers, servers["PREFECT_API_URL"]
    r = flywheel(
        [
            "deploy",
            str(TINY),
            "--pool",
            "team",
            "--cron",
            "0 3 * * *",
            "--set",
            f"runs_dir={runs_dir}",
            "--set",
            "name=nightly",
        ],
        env,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    dep = httpx.get(f"{api}/deployments/name/flywheel/nightly", timeout=10).json()
    assert dep["work_pool_name"] == "team"
    assert [s["schedule"]["cron"] for s in dep["schedules"]] == ["0 3 * * *"]
    assert dep["parameters"]["advance"] == 1
    assert dep["parameters"]["config"]["name"] == "nightly"
    assert Path(dep["parameters"]["config"]["runs_dir"]).is_absolute()
    assert dep["global_concurrency_limit"]["limit"] == 1  # one active run; later ones queue
    assert dep["concurrency_options"]["collision_strategy"] == "ENQUEUE"
    pool = httpx.get(f"{api}/work_pools/team", timeout=10).json()
    assert pool["type"] == "process"

    bad = flywheel(["deploy", str(TINY), "--pool", "team"], env, timeout=120)
    assert bad.returncode == 2 and "exactly one of --cron or --interval" in bad.stderr
