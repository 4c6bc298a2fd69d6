"""Faults of the whole run: `flywheel run` SIGKILLed three times in a row at random moments,
and its Prefect server restarted while a stage runs; the run that finally completes has the
same stage outputs as an uninterrupted run of the same config.

One generation of the tiny config, two runs in all: the uninterrupted reference (its folder
moved aside, its registered model deleted, so the faulted run has the same paths and the same
registry), then the faulted run against a real `prefect server start`:

1. three times: start the run, wait for a stage to land that had not before, wait a moment
   drawn from a seeded RNG, SIGKILL the run's whole process group (CLI, workers); after each
   kill the folder keeps its invariants and no landed stage was redone;
2. start it again and, while a stage is in flight, SIGKILL the Prefect server and start it
   again on the same port and database: the run carries on or stops with its clear error (no
   hang), and a rerun resumes;
3. the folder equals the reference stage by stage (same file hashes: the loop is
   deterministic), nothing landed before the last rerun was redone, no model was registered
   twice and `champion` names what the gate chose (`tests.faults.invariants`).
"""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.servers import prefect_server
from tests.faults.figures import left_on_disk, record
from tests.faults.invariants import assert_invariants, snapshot
from tests.runs import ROOT, TINY, flywheel

pytestmark = pytest.mark.slow

NAME = "faulted"
KILLS = 3
RNG_SEED = 20261206


def _args(runs_dir: Path) -> list[str]:
    return [
        "run",
        str(TINY),
        "--set",
        f"runs_dir={runs_dir}",
        "--set",
        f"name={NAME}",
        "--set",
        "generations=1",
    ]


def _launch(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=ROOT,
        env=env,
        stdout=log.open("a"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _wait_for(what, proc: subprocess.Popen, log: Path, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while not what():
        assert proc.poll() is None, (
            f"the run ended (status {proc.returncode}) too early:\n" + (log.read_text()[-3000:])
        )
        assert time.time() < deadline, f"no progress in {timeout} s:\n" + log.read_text()[-3000:]
        time.sleep(0.2)


def _in_flight(fw: Path) -> bool:
    return any(p.name.startswith(".tmp-") for p in fw.glob("gen-*/.tmp-*"))


def _delete_registered_model(runs_dir: Path) -> None:
    from mlflow import MlflowClient

    MlflowClient(f"sqlite:///{runs_dir}/mlflow.db").delete_registered_model(NAME)


def test_killed_three_times_and_prefect_restarted_ends_as_an_uninterrupted_run(
    runs_dir, shell_env, tmp_path
):
    args, fw = _args(runs_dir), runs_dir / NAME
    server = prefect_server(tmp_path / "prefect", shell_env)
    server.start()  # one server for every command: no local API to start each time
    env = {**shell_env, "PREFECT_API_URL": server.url}
    log, rng = tmp_path / "run.log", random.Random(RNG_SEED)
    try:
        ref = flywheel(args, env, timeout=1800)
        assert ref.returncode == 0, ref.stdout[-3000:] + ref.stderr[-3000:]
        reference = tmp_path / "reference"
        fw.rename(reference)
        _delete_registered_model(runs_dir)

        before: dict = {}
        killed_in: list[str] = []
        for kill in range(1, KILLS + 1):
            proc = _launch(args, env, log)
            landed = len(before)
            _wait_for(lambda: fw.is_dir() and len(snapshot(fw)) > landed, proc, log)  # noqa: B023
            time.sleep(rng.uniform(0.0, 1.5))
            assert proc.poll() is None, f"the run finished before kill {kill}"
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            killed_in += [p.name.split("-")[1] for p in fw.glob("gen-*/.tmp-*")]
            assert_invariants(fw, finished=False, before=before)
            before = snapshot(fw)
        assert "gen-0001/gate" not in before, "three kills and nothing left to do"
        left = left_on_disk(fw)

        proc = _launch(args, env, log)
        _wait_for(lambda: _in_flight(fw), proc, log)
        server.kill()
        server.start()
        status = proc.wait(timeout=1800)  # carries on, or stops: never hangs
        out = log.read_text()
        assert status == 0 or "Completed stages are kept" in out, out[-3000:]
        assert_invariants(fw, finished=status == 0, before=before)
        before = snapshot(fw)
        started = time.monotonic()
        if status != 0:
            r = flywheel(args, env, timeout=1800)
            assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        recovery_s = time.monotonic() - started
    finally:
        server.kill()

    gens = assert_invariants(
        fw,
        before=before,
        reference=reference,
        tracking_uri=f"sqlite:///{runs_dir}/mlflow.db",
        registered_model=NAME,
    )
    per_sample = gens[1].seeds.count * gens[1].generate.params["n"]
    record(
        "1",
        f"flywheel run SIGKILLed {KILLS} times at random moments (in {', '.join(killed_in)})",
        recovery_s=None,
        regenerated=per_sample * killed_in.count("generate"),
        duplicates=0,
        left_on_disk=left,
        same_hashes_as_uninterrupted=True,
    )
    record(
        "9",
        "Prefect server SIGKILLed and restarted while a stage ran",
        recovery_s=round(recovery_s, 1) if status != 0 else 0.0,
        regenerated=None,
        duplicates=0,
        left_on_disk=left_on_disk(fw),
        run_carried_on=status == 0,
    )
