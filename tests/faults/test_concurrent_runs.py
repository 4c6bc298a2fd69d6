"""Fault 10: several flywheels start at once on one machine with the embedded default.

Four processes open the same fresh local MLflow SQLite file at the same moment (a fork each,
released together by a barrier), as four `flywheel run`s of different configs in a new folder
do: each creates its experiment, its flywheel and generation runs, logs metrics and registers a
model version. Without the lock beside the database, MLflow's first-use migration runs in all
four at once and three die (`duplicate column name: step`, `table ... already exists`). The
database must end whole: one schema at MLflow's head revision, SQLite's integrity check clean,
every flywheel's runs and version there once.

(Two runs of the *same* flywheel are `flows/run_lock.py`'s: `tests/unit/test_run_lock.py`.
Prefect's local database needs no lock of ours: its migrations run in `BEGIN IMMEDIATE`
transactions, which SQLite serialises.)
"""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
import time
import traceback
from pathlib import Path

import pytest

from tasks import store
from tests.faults.figures import record

pytestmark = pytest.mark.slow

RUNS = 4


def _one_flywheel(i: int, runs_dir: Path, barrier, errors) -> None:
    try:
        from tasks.tracking import make_tracker

        fw = runs_dir / f"fw{i}"
        train = store.stage_dir(fw, 1, "train")
        with store.write_stage(train, "train") as (tmp, _):
            (tmp / "model").mkdir()
            (tmp / "model" / "weights.bin").write_bytes(bytes([i]) * 64)
        barrier.wait(60)
        tracker = make_tracker(True, runs_dir, f"fw{i}", f"fw{i}")
        tracker.start("{}", fw, {"flywheel.name": f"fw{i}"})
        tracker.start_generation(1, store.gen_dir(fw, 1))
        tracker.log_metrics({"pass@1": 0.1 * i}, step=1)
        version = tracker.register(train / "model", {"flywheel.generation": "1"})
        tracker.set_alias("champion", version)
        tracker.end_generation()
        tracker.end()
    except BaseException:
        errors.put(f"fw{i}: {traceback.format_exc()}")
        raise


def test_four_flywheels_create_one_local_mlflow_database_at_once(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    import mlflow  # noqa: F401  (imported once here: the forks only open the store)
    from mlflow.store.db.utils import _get_latest_schema_revision

    ctx = mp.get_context("fork")
    barrier, errors = ctx.Barrier(RUNS), ctx.Queue()
    procs = [
        ctx.Process(target=_one_flywheel, args=(i, tmp_path, barrier, errors)) for i in range(RUNS)
    ]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    seconds = time.perf_counter() - t0
    failed = []
    while not errors.empty():
        failed.append(errors.get())
    assert not failed, "\n".join(failed)
    assert [p.exitcode for p in procs] == [0] * RUNS

    db = sqlite3.connect(tmp_path / "mlflow.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [
            (_get_latest_schema_revision(),)
        ]
        experiments = {n for (n,) in db.execute("SELECT name FROM experiments")}
        assert {f"fw{i}" for i in range(RUNS)} <= experiments
        versions = db.execute("SELECT name, version FROM model_versions ORDER BY name").fetchall()
        assert versions == [(f"fw{i}", 1) for i in range(RUNS)]
        runs = db.execute("SELECT status, count(*) FROM runs GROUP BY status").fetchall()
        assert runs == [("FINISHED", 2 * RUNS)]  # a flywheel run and a generation run each
        record(
            10,
            f"{RUNS} flywheels open one fresh local MLflow database at once",
            recovery_s=None,
            all_finished_s=round(seconds, 1),
            finished=sum(p.exitcode == 0 for p in procs),
            duplicates=len(versions) - len(set(versions)),
            left_on_disk=sorted(p.name for p in tmp_path.glob("mlflow.db-*")),  # journals
        )
    finally:
        db.close()
