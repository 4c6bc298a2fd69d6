"""Faults inside the heavy workers, at stage level (the Prefect tasks with their retries, on the
tiny random model; no full run):

- the generate worker SIGKILLed mid-generation (between two batches): the stage retries in a
  fresh process and lands whole;
- the training worker SIGKILLed mid-run, and while it saves the model: the retry starts over
  (the partial save is thrown away with its temporary folder) and trains the same model an
  uninterrupted run does;
- vLLM's engine-core process SIGKILLed as a generate call starts: the worker ends at once,
  retryable, instead of waiting forever on the dead engine (vLLM 0.32's behaviour);
- a NaN loss at a given step: training stops within that step with an error naming it; it is
  not retried, no train folder lands and none is left half-written.

After each, `tests.faults.invariants.assert_invariants` holds for the flywheel folder.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from tasks import faults, store, subproc
from tasks.config import load_config
from tasks.domains import DOMAINS, arith, make_seeds
from tasks.records import Sample, stable_hash, to_rows
from tests.faults.figures import left_on_disk, record
from tests.faults.invariants import assert_invariants, snapshot
from tests.runs import TINY

pytestmark = pytest.mark.slow

SEEDS = 8


def _config(runs: Path, **overrides):
    return load_config(
        TINY,
        runs_dir=str(runs),
        name="faults",
        **{"sampling.n": 2, "engine.hf_batch_size": 4, "train.cpu_threads": 1, **overrides},
    )


def _seeds_stage(cfg) -> Path:
    seeds = make_seeds(DOMAINS["arith"], SEEDS, 1, random.Random(0), set())
    folder = store.stage_dir(cfg.flywheel_dir, 1, "seeds")
    with store.write_stage(folder, "seeds") as (tmp, out):
        store.write_parquet(to_rows(seeds), tmp / "seeds.parquet")
        out.update(count=len(seeds), difficulty=1.0, hash=stable_hash(sorted(s.id for s in seeds)))
    return folder


def _inject(monkeypatch, tmp_path: Path, spec: str) -> Path:
    """`FLYWHEEL_FAULTS=spec`, each point firing once across processes (a retry survives)."""
    once = tmp_path / "fired"
    monkeypatch.setenv(faults.ENV, spec)
    monkeypatch.setenv(faults.ONCE_ENV, str(once))
    faults._hits.clear()
    return once


def _workers(module: str) -> int:
    return sum(m == module for m, _ in subproc.WORKER_WALL)


def test_generate_worker_killed_mid_generation_is_retried_in_a_fresh_process(
    prefect_harness, tiny_model, tmp_path, monkeypatch
):
    from tasks.stages import generate_stage

    cfg = _config(tmp_path)
    seeds = _seeds_stage(cfg)
    once = _inject(monkeypatch, tmp_path, "generate.batch@2=sigkill")
    started = _workers("tasks.generate")
    folder = generate_stage(cfg, 1, tiny_model, seeds)

    assert (once / "generate.batch").exists(), "the fault never fired"
    assert _workers("tasks.generate") - started == 2  # the killed worker, then its retry
    out = store.read_manifest(folder, verify=True).outputs
    assert out["samples"] == SEEDS * 2
    assert_invariants(cfg.flywheel_dir)
    samples = store.read_parquet(folder / "samples.parquet")
    record(
        "2",
        "generate worker SIGKILLed at its 2nd batch; the stage retried",
        recovery_s=round(subproc.WORKER_WALL[-1][1], 1),  # the retry's worker, start to exit
        regenerated=len(samples),  # the whole stage again (the dead worker wrote nothing)
        duplicates=len(samples) - len({s["id"] for s in samples}),
        left_on_disk=left_on_disk(cfg.flywheel_dir),
        attempts=2,
    )


@pytest.mark.parametrize("multiprocessing", [True, False], ids=["own-processes", "in-worker"])
def test_vllm_engine_killed_mid_generation_ends_the_worker_not_hangs(
    multiprocessing, tiny_model, tmp_path, monkeypatch
):
    """One real vLLM CPU engine start, in the generate worker. In processes of its own (the
    GPU default), its engine-core process is SIGKILLed: the watchdog ends the worker with
    TRANSIENT_EXIT. Inside the worker (the CPU default), the SIGKILL takes the worker: retryable
    too, by the signal."""
    pytest.importorskip("vllm")
    from tasks.config import FlywheelConfig
    from tasks.generate import generate_in_subprocess
    from tasks.requests import generate_request, sampling_spec

    cfg = FlywheelConfig(
        engine={
            "backend": "vllm",
            "max_model_len": 128,
            "gpu_memory_utilization": 0.1,
            "multiprocessing": multiprocessing,
        },
        sampling={"n": 2, "max_tokens": 16},
    )
    questions, out = tmp_path / "q.parquet", tmp_path / "raw.parquet"
    store.write_parquet([{"seed_id": f"s{i}", "question": f"{i}+1"} for i in range(4)], questions)
    req = generate_request(cfg, tiny_model, sampling_spec(cfg, 0), questions, out)
    _inject(monkeypatch, tmp_path, "generate.batch=kill_engine")
    failed: list[BaseException] = []

    def call() -> None:
        try:
            generate_in_subprocess(replace(req, progress=False), tmp_path / "generate.log")
        except BaseException as e:  # noqa: BLE001 (handed to the test thread)
            failed.append(e)

    started = time.monotonic()
    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(timeout=600)
    assert not worker.is_alive(), "the worker hangs on its dead engine"
    assert len(failed) == 1 and isinstance(failed[0], subproc.WorkerError), failed
    assert failed[0].retryable
    if multiprocessing:
        assert "died mid-generation" in str(failed[0])
        assert failed[0].code == subproc.TRANSIENT_EXIT
    else:
        assert failed[0].code == -signal.SIGKILL, failed[0]
    assert not out.exists()
    where = "engine-core process" if multiprocessing else "worker (engine inside it)"
    record(
        "2" if multiprocessing else "2b",
        f"vLLM {where} SIGKILLed as generate starts; the worker ends, retryable",
        recovery_s=None,
        regenerated=0,
        duplicates=0,
        left_on_disk=[],
        worker_s=round(time.monotonic() - started, 1),
    )


@pytest.fixture
def curated(prefect_harness, tmp_path):
    """A flywheel whose gen-0001 has seeds, generate (each seed answered twice by the domain's
    reference solution, so curation accepts them) and a real curate stage."""
    from tasks.stages import curate_stage

    cfg = _config(tmp_path)
    seeds = store.read_parquet(_seeds_stage(cfg) / "seeds.parquet")
    params = {"n": 2, "note": "reference solutions"}
    samples = [
        Sample(
            Sample.make_id(1, s["id"], i, "reference", params),
            s["id"],
            f"Q: {s['question']}\n",
            arith.solution(s["question"]) + " " * i,
            s["answer"],
            1,
            i,
            "reference",
            20,
            "stop",
        )
        for s in seeds
        for i in range(2)
    ]
    with store.write_stage(store.stage_dir(cfg.flywheel_dir, 1, "generate"), "generate") as (
        tmp,
        out,
    ):
        store.write_parquet(to_rows(samples), tmp / "samples.parquet")
        out.update(model="reference", params=params, samples=len(samples), hash="reference")
    curate_stage(cfg, 1, store.stage_dir(cfg.flywheel_dir, 1, "generate"))
    assert store.read_manifest(store.stage_dir(cfg.flywheel_dir, 1, "curate")).outputs["accepted"]
    return cfg


def _model_hash(cfg) -> str:
    man = store.read_manifest(store.stage_dir(cfg.flywheel_dir, 1, "train"), verify=True)
    return man.files["model/model.safetensors"]["sha256"]


@pytest.mark.parametrize("spec", ["train.step@3=sigkill", "train.save=sigkill"])
def test_training_killed_mid_run_or_mid_save_starts_over(
    curated, tiny_model, tmp_path, monkeypatch, spec, request
):
    from tasks.stages import train_stage

    once = _inject(monkeypatch, tmp_path, spec)
    started = _workers("tasks.train")
    before = snapshot(curated.flywheel_dir)
    folder = train_stage(curated, 1, tiny_model)

    assert (once / spec.split("@")[0].split("=")[0]).exists(), "the fault never fired"
    assert _workers("tasks.train") - started == 2  # the killed worker, then its retry
    assert (folder / "model" / "training_args.json").is_file()  # the whole folder, not a part
    assert_invariants(curated.flywheel_dir, before=before)
    # The retry trained from scratch: the same weights whichever way the first attempt died.
    hashes = request.config.cache_hashes = getattr(request.config, "cache_hashes", {})
    hashes[spec] = _model_hash(curated)
    if len(hashes) == 2:
        assert len(set(hashes.values())) == 1, hashes
    record(
        "3",
        f"training worker SIGKILLed ({spec}); the stage retried from scratch",
        recovery_s=round(subproc.WORKER_WALL[-1][1], 1),
        regenerated=0,
        duplicates=0,
        left_on_disk=left_on_disk(curated.flywheel_dir),
        attempts=2,
        same_weights_as_other_kill=len(set(hashes.values())) == 1 if len(hashes) == 2 else None,
    )


def test_nan_loss_stops_training_within_the_step_and_lands_nothing(
    curated, tiny_model, tmp_path, monkeypatch
):
    from tasks.stages import train_stage
    from tasks.subproc import WorkerError

    _inject(monkeypatch, tmp_path, "train.step@2=nan")
    started = _workers("tasks.train")
    with pytest.raises(WorkerError, match=r"NonFiniteLoss: non-finite loss .* at step 2/") as e:
        train_stage(curated, 1, tiny_model)
    assert not e.value.retryable
    assert _workers("tasks.train") - started == 1  # a NaN is not retried
    gdir = store.gen_dir(curated.flywheel_dir, 1)
    assert not (gdir / "train").exists()
    assert not list(gdir.glob(".tmp-*")), "a half-written train folder was left"
    assert_invariants(curated.flywheel_dir)
    record(
        "6",
        "NaN loss at step 2: training stopped, not retried",
        recovery_s=None,
        regenerated=0,
        duplicates=0,
        left_on_disk=left_on_disk(curated.flywheel_dir),
        attempts=1,
        error=str(e.value).splitlines()[-1][:200],
    )
