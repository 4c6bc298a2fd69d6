"""Stages as Prefect deployments on work pools, for real: a Prefect server on a fresh PostgreSQL
database, one `prefect worker start --type process` per pool (`bench.bench_dispatch.LocalCluster`),
`flywheel deploy-stages` and one generation of the tiny config with
`cluster.stage_runner: deployment`, every stage kind on a pool (seeds too).

Read back through the API: each stage's flow run ran on the pool the config named (its work
pool, and that pool's worker's log names it) and completed. Then the generation is run again
inline on the same folder (generation 0 kept, generation 1 moved aside): every stage's files,
hashes and sample ids equal the deployed run's. A stage whose pool has no worker ends, at
`cluster.timeout_s`, with its flow run cancelled and an error naming the stage and the pool.
At teardown the workers (with their flow processes) and the server are stopped, and nothing of
theirs is left running.
"""

import os
import shutil

import httpx
import pytest

from bench.bench_dispatch import LocalCluster, stage_runs
from tasks import store
from tests.faults.invariants import stage_hashes
from tests.runs import TINY, flywheel

pytestmark = pytest.mark.slow

NAME = "pools"
POOLS = {
    "seeds": "cpu",
    "generate": "gpu-gen",
    "curate": "cpu",
    "train": "gpu-train",
    "eval": "gpu-gen",
}
GEN1 = ("seeds", "generate", "curate", "train", "eval", "gate")


def _sets(runs_dir, stage_runner: str) -> list[str]:
    sets = [
        f"runs_dir={runs_dir}",
        f"name={NAME}",
        "generations=1",
        "tracking.enabled=false",  # the stages' outputs are the subject; MLflow is tested apart
        "train.cpu_threads=1",  # the same threads in both runs: the same weights
        "engine.cpu_threads=1",
        f"cluster.stage_runner={stage_runner}",
        *(f"cluster.pools.{kind}={pool}" for kind, pool in POOLS.items()),
    ]
    return [a for s in sets for a in ("--set", s)]


def _group_alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, shell_env):
    work = tmp_path_factory.mktemp("cluster")
    with LocalCluster(work, POOLS.values(), shell_env, query_s=1) as c:
        yield c
    left = [p for p, w in c.workers.items() if w.poll() is None or _group_alive(w.pid)]
    assert not left, f"workers (or their flow processes) still running: {left}"
    assert c.server.proc.poll() is not None and not _group_alive(c.server.proc.pid)


def test_each_stage_runs_on_its_pool_and_equals_an_inline_run(cluster, runs_dir, tmp_path):
    env, api = cluster.env, cluster.api
    r = flywheel(["deploy-stages", str(TINY), *_sets(runs_dir, "deployment")], env, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for kind, pool in POOLS.items():
        dep = httpx.get(f"{api}/deployments/name/stage-{kind}/{pool}", timeout=30).json()
        assert dep["work_pool_name"] == pool, dep

    r = flywheel(["run", str(TINY), *_sets(runs_dir, "deployment")], env, timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    runs = stage_runs(api, NAME)
    assert sorted(r["name"] for r in runs) == sorted(
        [f"{NAME}/gen-0000/eval"] + [f"{NAME}/gen-0001/{k}" for k in POOLS]
    )
    logs = {pool: cluster.worker_log(pool).read_text() for pool in set(POOLS.values())}
    for run in runs:
        assert run["state"] == "COMPLETED", run
        assert run["pool"] == POOLS[run["kind"]], run
        ran_by = [p for p, text in logs.items() if f"submitting flow run '{run['id']}'" in text]
        assert ran_by == [POOLS[run["kind"]]], (run, ran_by)

    fw = runs_dir / NAME
    deployed = {k: v for k, v in stage_hashes(fw).items() if k.startswith("gen-0001/")}
    assert sorted(deployed) == sorted(f"gen-0001/{s}" for s in GEN1)
    ids = [s["id"] for s in store.read_parquet(fw / "gen-0001" / "generate" / "samples.parquet")]
    shutil.move(fw / "gen-0001", tmp_path / "deployed-gen-0001")

    r = flywheel(["run", str(TINY), *_sets(runs_dir, "inline")], env, timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert len(stage_runs(api, NAME)) == len(runs)  # inline: no new stage flow run
    inline = {k: v for k, v in stage_hashes(fw).items() if k.startswith("gen-0001/")}
    for rel in sorted(inline):
        assert inline[rel] == deployed[rel], f"{rel}: inline and deployed runs differ"
    again = [s["id"] for s in store.read_parquet(fw / "gen-0001" / "generate" / "samples.parquet")]
    assert again == ids and len(ids) == len(set(ids)) > 0


def test_a_pool_without_a_worker_times_out_and_is_cancelled(cluster, runs_dir):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.deployments import deploy_stages
    from flows.stage_runner import StageRunError, run_stage
    from tasks.config import load_config
    from tasks.stages import train_stage

    cfg = load_config(
        TINY,
        runs_dir=str(runs_dir),
        name="idle",
        cluster={"stage_runner": "deployment", "pools": {"train": "idle"}, "timeout_s": 3},
    )
    with temporary_settings({PREFECT_API_URL: cluster.api}):
        assert "stage-train/idle" in deploy_stages(cfg)
        with pytest.raises(StageRunError) as e:
            run_stage(cfg, "train", train_stage, 1, "/nowhere")
    msg = str(e.value)
    assert "stage train on pool 'idle'" in msg and "still Scheduled" in msg
    assert "cluster.timeout_s=3 s" in msg and "cancelled" in msg
    [run] = stage_runs(cluster.api, "idle")
    assert run["pool"] == "idle" and run["state"] in ("CANCELLING", "CANCELLED")
    assert not (runs_dir / "idle" / "gen-0001" / "train").exists()
