"""Fault 5: the disk fills up (ENOSPC) while a stage writes a dataset, its manifest, a model
checkpoint, or uploads an MLflow artifact.

Injected through `tasks.faults` (`store.write`, `store.commit`, `train.save`,
`tracking.artifact` = `enospc`: the `OSError` a full disk raises, at the point it would). Each
time the stage fails loudly with that error, leaves no folder that looks complete (no stage
folder, no `.tmp-*` leftover, nothing registered), the stages before it untouched; with space
back (the fault unset) the same call completes.
"""

from __future__ import annotations

import errno
import time

import pytest

from tasks import store
from tasks.config import FlywheelConfig
from tasks.faults import ENV
from tests.faults.figures import left_on_disk, record
from tests.faults.folders import seeds_and_samples
from tests.faults.invariants import assert_invariants, snapshot

RULES = {"rewards": ["accuracy", "format"]}


def _leftovers(folder):
    return sorted(p.name for p in folder.parent.glob(f".tmp-{folder.name}-*"))


@pytest.mark.parametrize(
    "point",
    [
        "store.write@1",  # accepted.parquet, the first table curate writes
        "store.write@2",  # verdicts.parquet: one table already written
        "store.commit",  # every table written, the manifest not
    ],
)
def test_curate_stage_on_a_full_disk_fails_and_lands_once_space_is_back(
    point, tmp_path, monkeypatch
):
    from tasks.stages import curate_stage

    cfg = FlywheelConfig(name="full", runs_dir=tmp_path, curation=RULES)
    gen = seeds_and_samples(cfg.flywheel_dir)
    before = snapshot(cfg.flywheel_dir)
    folder = store.stage_dir(cfg.flywheel_dir, 1, "curate")

    monkeypatch.setenv(ENV, f"{point}=enospc")
    with pytest.raises(OSError) as e:
        curate_stage.fn(cfg, 1, gen)
    assert e.value.errno == errno.ENOSPC and point.split("@")[0] in str(e.value)
    assert not folder.exists() and _leftovers(folder) == []
    left = left_on_disk(cfg.flywheel_dir)
    assert_invariants(cfg.flywheel_dir, before=before)

    monkeypatch.delenv(ENV)
    t0 = time.perf_counter()
    curate_stage.fn(cfg, 1, gen)
    recovery_s = time.perf_counter() - t0
    out = store.read_manifest(folder, verify=True).outputs
    assert out["accepted"] == 6
    assert_invariants(cfg.flywheel_dir, before=before)  # no sample or id twice, nothing redone
    ids = [r["sample_id"] for r in store.read_parquet(folder / "verdicts.parquet")]
    record(
        5,
        f"ENOSPC at {point} in curate",
        recovery_s=round(recovery_s, 2),
        regenerated=0,  # generate is unchanged (`before`); only curate's pass over it is redone
        redone=f"curate: {len(ids)} verdicts",
        duplicates=len(ids) - len(set(ids)),
        left_on_disk=left,
    )


def test_mlflow_upload_on_a_full_disk_registers_nothing_until_space_is_back(tmp_path, monkeypatch):
    from tasks.tracking import make_tracker

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    fw = tmp_path / "fw"
    train = store.stage_dir(fw, 1, "train")
    with store.write_stage(train, "train") as (tmp, _):
        (tmp / "model").mkdir()
        (tmp / "model" / "model.safetensors").write_bytes(b"\0" * 512)
    tracker = make_tracker(True, tmp_path, "full", "full")
    tracker.start("{}", fw)
    tracker.start_generation(1, store.gen_dir(fw, 1))

    monkeypatch.setenv(ENV, "tracking.artifact=enospc")
    with pytest.raises(OSError) as e:
        tracker.register(train / "model", {"flywheel.generation": "1"})
    assert e.value.errno == errno.ENOSPC
    assert tracker.client.search_model_versions("name='full'") == []
    monkeypatch.delenv(ENV)
    t0 = time.perf_counter()
    version = tracker.register(train / "model", {"flywheel.generation": "1"})
    recovery_s = time.perf_counter() - t0
    assert tracker.register(train / "model", {"flywheel.generation": "1"}) == version
    versions = [v.version for v in tracker.client.search_model_versions("name='full'")]
    assert versions == [1]
    assert store.read_manifest(train, verify=True) is not None  # the checkpoint untouched
    record(
        5,
        "ENOSPC uploading a checkpoint to MLflow",
        recovery_s=round(recovery_s, 2),
        regenerated=0,
        duplicates=len(versions) - 1,  # versions of generation 1 beyond the first
        left_on_disk=left_on_disk(fw),
    )


@pytest.mark.slow
def test_training_on_a_full_disk_fails_at_the_checkpoint_and_trains_once_space_is_back(
    tiny_model, tmp_path, monkeypatch
):
    """ENOSPC as the trained model is saved (`train.save`, inside the training worker, after
    its steps): the worker fails with the error (a full disk is not retried), nothing of train
    lands or is left; with space back the stage trains and lands. (The stage functions are
    called directly: no Prefect API to start.)"""
    from tasks.config import load_config
    from tasks.stages import curate_stage, train_stage
    from tasks.subproc import WorkerError
    from tests.runs import TINY

    cfg = load_config(
        TINY, runs_dir=str(tmp_path), name="full", **{"train.cpu_threads": 1, "train.epochs": 1}
    )
    curate_stage.fn(cfg, 1, seeds_and_samples(cfg.flywheel_dir))
    before = snapshot(cfg.flywheel_dir)
    folder = store.stage_dir(cfg.flywheel_dir, 1, "train")
    monkeypatch.setenv(ENV, "train.save=enospc")
    with pytest.raises(WorkerError, match=r"No space left on device \(injected at train.save\)"):
        train_stage.fn(cfg, 1, tiny_model)
    assert not folder.exists() and _leftovers(folder) == []
    left = left_on_disk(cfg.flywheel_dir)
    assert_invariants(cfg.flywheel_dir, before=before)

    monkeypatch.delenv(ENV)
    t0 = time.perf_counter()
    train_stage.fn(cfg, 1, tiny_model)
    recovery_s = time.perf_counter() - t0
    assert store.read_manifest(folder, verify=True).files["model/model.safetensors"]["bytes"] > 0
    assert_invariants(cfg.flywheel_dir, before=before)
    record(
        5,
        "ENOSPC saving the trained model (train worker)",
        recovery_s=round(recovery_s, 1),
        regenerated=0,
        redone="train",
        left_on_disk=left,
    )
