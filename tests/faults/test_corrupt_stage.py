"""Fault 4: a completed stage's file changed afterwards (a Parquet table edited, a safetensors
checkpoint truncated, a file deleted): the next reader checks it against the stage's manifest
(`tasks.store.verify`: size, then SHA-256) and stops with `StageCorrupt` naming the file, before
it loads anything; nothing is ever unpickled (a model folder with only pickled weights is
refused, and no project code calls `torch.load` or `pickle`).
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tasks import store
from tasks.config import FlywheelConfig
from tests.faults.figures import left_on_disk, record
from tests.faults.folders import seeds_and_samples
from tests.faults.invariants import assert_invariants

ROOT = Path(__file__).parents[2]


def test_an_edited_parquet_stops_the_next_stage_naming_the_file(tmp_path):
    from tasks.stages import curate_stage

    cfg = FlywheelConfig(name="edited", runs_dir=tmp_path, curation={"rewards": ["accuracy"]})
    gen = seeds_and_samples(cfg.flywheel_dir)
    samples = gen / "samples.parquet"
    original = samples.read_bytes()
    table = pq.read_table(samples).to_pylist()
    table[0]["completion"] = table[0]["completion"].replace("19", "91")  # same length
    pq.write_table(
        pq.read_table(samples).from_pylist(table, schema=pq.read_schema(samples)), samples
    )

    with pytest.raises(store.StageCorrupt, match=re.escape(str(samples))) as e:
        curate_stage.fn(cfg, 1, gen)
    assert "changed since its stage completed" in str(e.value)
    assert not store.stage_dir(cfg.flywheel_dir, 1, "curate").exists()
    with pytest.raises(AssertionError, match="samples.parquet"):
        assert_invariants(cfg.flywheel_dir)  # the checker sees it too

    left = left_on_disk(cfg.flywheel_dir)
    samples.write_bytes(original)  # restored: the run goes on from there
    t0 = time.perf_counter()
    folder = curate_stage.fn(cfg, 1, gen)
    recovery_s = time.perf_counter() - t0
    assert store.read_manifest(folder).outputs["accepted"] == 6
    assert_invariants(cfg.flywheel_dir)
    ids = [r["sample_id"] for r in store.read_parquet(folder / "verdicts.parquet")]
    record(
        4,
        "edited samples.parquet, read by curate (file restored)",
        recovery_s=round(recovery_s, 2),
        regenerated=0,
        duplicates=len(ids) - len(set(ids)),
        left_on_disk=left,
    )


@pytest.fixture
def landed_model(tiny_model, tmp_path) -> Path:
    """The tiny model as a landed train stage's `model/` folder."""
    train = store.stage_dir(tmp_path / "fw", 1, "train")
    with store.write_stage(train, "train") as (tmp, _):
        shutil.copytree(tiny_model, tmp / "model")
    return train / "model"


def _generate(model: Path, tmp_path: Path) -> None:
    from tasks.generate import generate_in_subprocess
    from tasks.requests import generate_request, sampling_spec

    cfg = FlywheelConfig(runs_dir=tmp_path)
    questions = tmp_path / "questions.parquet"
    store.write_parquet([{"seed_id": "s", "question": "1+1"}], questions)
    generate_in_subprocess(
        generate_request(cfg, str(model), sampling_spec(cfg, 0), questions, tmp_path / "out.pq")
    )


@pytest.mark.parametrize("damage", ["truncated", "deleted"])
def test_a_damaged_checkpoint_stops_the_worker_before_it_loads(landed_model, tmp_path, damage):
    from tasks.subproc import WORKER_WALL
    from tasks.tracking import model_hash

    weights = landed_model / "model.safetensors"
    if damage == "truncated":
        with open(weights, "r+b") as f:
            f.truncate(weights.stat().st_size // 2)
    else:
        weights.unlink()
    workers = len(WORKER_WALL)
    with pytest.raises(store.StageCorrupt, match=re.escape(str(weights))):
        _generate(landed_model, tmp_path)
    assert len(WORKER_WALL) == workers  # refused before any process started
    with pytest.raises(store.StageCorrupt, match="model.safetensors"):
        model_hash(landed_model)  # nor can it be registered


def test_a_model_with_only_pickled_weights_is_refused(tiny_model, tmp_path):
    from tasks.subproc import WORKER_WALL

    model = tmp_path / "pickled"
    shutil.copytree(tiny_model, model)
    (model / "model.safetensors").rename(model / "pytorch_model.bin")  # any bytes: never read
    workers = len(WORKER_WALL)
    with pytest.raises(store.UnsafeModel, match="pytorch_model.bin"):
        _generate(model, tmp_path)
    assert len(WORKER_WALL) == workers


def test_no_project_code_unpickles():
    """Weights are safetensors, records Parquet or JSON: no source calls an unpickler."""
    pattern = re.compile(r"\btorch\.load\(|\bpickle\.loads?\(|\bjoblib\.load\(|\bdill\.load")
    hits = [
        f"{p.relative_to(ROOT)}:{i}"
        for folder in ("tasks", "flows", "bench")
        for p in sorted((ROOT / folder).rglob("*.py"))
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert hits == []
