"""Fault 8: the MLflow server stops while a generation logs and while it promotes.

A real `mlflow server` (SQLite backend, artifacts proxied to a folder) on a free port, killed
with SIGKILL and started again on the same port and database. The tracker is the flywheel's
own (`tasks.tracking.make_tracker` with `MLFLOW_TRACKING_URI`):

- promotion: with the client's retries spent, registering and moving the alias fail with an
  error, and the `champion` alias stays on the old version;
- logging: an outage shorter than the client's retries (MLflow retries refused connections
  with exponential backoff, 7 times by default: minutes) is ridden out: the call returns once
  the server is back;
- the resumed run reuses the flywheel and generation runs (ids on disk) and registers nothing
  twice: the version is looked up by generation + model hash, also after a registration whose
  reply was lost.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from flows.servers import mlflow_server
from tasks import store
from tests.faults.figures import left_on_disk, record

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    s.start()
    yield s
    s.kill()


def _model(fw: Path, g: int) -> Path:
    """A landed train stage of generation g with a small model folder."""
    train = store.stage_dir(fw, g, "train")
    with store.write_stage(train, "train") as (tmp, _):
        (tmp / "model").mkdir()
        (tmp / "model" / "model.safetensors").write_bytes(bytes([g]) * 256)
        (tmp / "model" / "config.json").write_text(f'{{"generation": {g}}}')
    return train / "model"


def _tracker(fw: Path):
    from tasks.tracking import make_tracker

    t = make_tracker(True, fw.parent, "faults-mlflow", "faults-model")
    t.start("{}", fw, {"flywheel.name": fw.name})
    return t


def _versions(tracker) -> list[str]:
    found = tracker.client.search_model_versions(f"name='{tracker.model_name}'")
    return sorted(str(v.version) for v in found)


def test_server_lost_while_promoting_and_while_logging(server, tmp_path, monkeypatch):
    from mlflow.exceptions import MlflowException

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    fw = tmp_path / "fw"
    tracker = _tracker(fw)
    tracker.start_generation(1, store.gen_dir(fw, 1))
    v1 = tracker.register(_model(fw, 1), {"flywheel.generation": "1"})
    tracker.set_alias("champion", v1)
    tracker.end_generation()

    # Promotion: registered, the reply lost (the run dies there); then the server is gone.
    tracker.start_generation(2, store.gen_dir(fw, 2))
    model2 = _model(fw, 2)
    monkeypatch.setenv("FLYWHEEL_FAULTS", "tracking.register=raise")
    with pytest.raises(RuntimeError, match="tracking.register"):
        tracker.register(model2, {"flywheel.generation": "2"})
    monkeypatch.delenv("FLYWHEEL_FAULTS")
    assert len(_versions(tracker)) == 2
    server.kill()
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail at once
    for call in (
        lambda: tracker.register(model2, {"flywheel.generation": "2"}),
        lambda: tracker.set_alias("champion", "2"),
    ):
        t0 = time.monotonic()
        with pytest.raises(MlflowException, match="Max retries exceeded|Connection refused"):
            call()
        assert time.monotonic() - t0 < 30

    # Logging while it is down: the client's retries wait for the server to come back.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "8")  # up to ~4 min of backoff
    restart = threading.Thread(target=server.start)
    t0 = time.monotonic()
    restart.start()
    tracker.log_metrics({"curate.accepted": 7.0}, step=2)
    ridden_out_s = time.monotonic() - t0
    restart.join()
    history = tracker.client.get_metric_history(tracker.run_id, "curate.accepted")
    assert [m.value for m in history] == [7.0]
    print(f"logging outage ridden out in {ridden_out_s:.1f} s")

    # The resumed run (a new tracker, as a new process makes) continues the same runs.
    t0 = time.monotonic()
    resumed = _tracker(fw)
    assert resumed.parent_run_id == tracker.parent_run_id
    assert resumed.champion() == {"version": v1, "generation": 1}  # the alias never moved
    resumed.start_generation(2, store.gen_dir(fw, 2))
    assert resumed.run_id == tracker.run_id
    v2 = resumed.register(model2, {"flywheel.generation": "2"})
    assert _versions(resumed) == sorted([v1, v2])  # nothing registered twice
    resumed.set_alias("champion", v2)
    promoted_s = time.monotonic() - t0
    resumed.end_generation()
    resumed.end("FINISHED")
    assert resumed.champion() == {"version": v2, "generation": 2}
    runs = resumed.client.search_runs([resumed.experiment_id])
    assert len(runs) == 3  # the flywheel's run and one per generation, none made again
    record(
        8,
        "MLflow server killed during logging (ridden out by the client's retries)",
        recovery_s=round(ridden_out_s, 1),
        regenerated=0,
        duplicates=len(history) - 1,
        left_on_disk=left_on_disk(fw),
    )
    record(
        8,
        "MLflow server killed during promotion (resumed run)",
        recovery_s=round(promoted_s, 1),
        regenerated=0,
        duplicates=len(_versions(resumed)) - 2 + len(runs) - 3,
        left_on_disk=left_on_disk(fw),
    )
