"""Training under `accelerate launch` for real: two gloo processes on CPU (tiny model, 48 rows,
batch 8, one epoch), started by the train stage or the worker's entry point.

What ran is read from inside the ranks, never from the config: the traps are silent
(`--cpu --num_processes 2` runs one process; FSDP on a machine without GPUs runs DDP).
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tasks import store
from tasks.config import FlywheelConfig
from tasks.domains import arith
from tasks.requests import sft_request
from tasks.subproc import WorkerError
from tasks.train import train_in_subprocess

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
ROWS, BATCH = 48, 8


def _rows() -> list[dict]:
    rng = random.Random(0)
    questions = [arith.generate(rng, 2).question for _ in range(ROWS)]
    return [{"prompt": f"Q: {q}\n", "completion": arith.solution(q)} for q in questions]


def _config(tmp_path: Path, file: str = "ddp.yaml", **train) -> FlywheelConfig:
    return FlywheelConfig(
        runs_dir=tmp_path / "runs",
        train={
            "learning_rate": 3e-3,
            "epochs": 1.0,
            "batch_size": BATCH,
            "max_length": 128,
            "launcher": "accelerate",
            "num_processes": 2,
            "accelerate_config": str(ROOT / "configs" / "accelerate" / file),
            **train,
        },
    )


def _request(tmp_path: Path, cfg: FlywheelConfig, model: str):
    table = tmp_path / "train.parquet"
    store.write_parquet(_rows(), table)
    return sft_request(cfg, 0, model, table, tmp_path / "model")


def _alive(pid: int) -> bool:
    """A process that still exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_two_gloo_processes_each_train_half_the_steps_and_save_one_model(tiny_model, tmp_path):
    from tasks.stages import train_stage

    cfg = _config(tmp_path)
    curate = store.stage_dir(cfg.flywheel_dir, 1, "curate")
    with store.write_stage(curate, "curate") as (tmp, _):
        store.write_parquet(_rows(), tmp / "accepted.parquet")

    folder = train_stage.fn(cfg, 1, tiny_model)

    out = store.read_manifest(folder, verify=True).outputs
    assert (out["launcher"], out["num_processes"]) == ("accelerate", 2)
    assert out["accelerate_config"].endswith("configs/accelerate/ddp.yaml")
    # Measured in the ranks: two processes of a gloo DDP group...
    assert out["world_size"] == 2 and out["distributed_type"] == "MULTI_CPU"
    pids = out["process_pids"]
    assert len(set(pids)) == 2 and os.getpid() not in pids
    # ...each stepping through half the data: 48 rows / (8 per process x 2) = 3 steps, where one
    # process would take 6.
    assert out["steps_per_process"] == [3, 3] and out["steps"] == 3
    assert out["train_rows"] == out["samples"] == ROWS
    assert out["cpu_s"] > 0 and out["train_loss_last"] < out["train_loss_first"]
    assert not [p for p in pids if _alive(p)], "a rank outlived the launch"

    model = folder / "model"
    assert sorted(p.name for p in model.iterdir() if p.suffix == ".safetensors") == [
        "model.safetensors"
    ]
    assert not [p for p in model.iterdir() if p.suffix in (".bin", ".pt", ".pkl")]
    assert (model / "training_args.json").is_file()
    trained = load_file(model / "model.safetensors")
    base = load_file(Path(tiny_model) / "model.safetensors")
    assert trained.keys() == base.keys()
    assert all(not torch.equal(trained[k], base[k]) for k in base)


def test_fsdp_without_gpus_runs_as_ddp_and_the_worker_stops_saying_so(tiny_model, tmp_path):
    request = _request(tmp_path, _config(tmp_path, "fsdp.yaml"), tiny_model)
    with pytest.raises(WorkerError) as e:
        train_in_subprocess(request)
    assert "train.accelerate_config: " in str(e.value)
    assert "fsdp.yaml asks for FSDP" in str(e.value)
    assert "accelerate set up MULTI_CPU on 2 process(es)" in str(e.value)  # what ran
    assert e.value.code == 1 and not e.value.retryable
    assert not (tmp_path / "model").exists() or not list((tmp_path / "model").iterdir())


def test_an_error_in_one_rank_is_a_worker_error_with_its_log_tail(
    tiny_model, tmp_path, monkeypatch
):
    once = tmp_path / "once"
    once.mkdir()
    monkeypatch.setenv("FLYWHEEL_FAULTS", "train.step@2=raise")
    monkeypatch.setenv("FLYWHEEL_FAULTS_ONCE", str(once))  # fires in the first rank there only
    request = _request(tmp_path, _config(tmp_path), tiny_model)
    with pytest.raises(WorkerError, match="a training rank exited with status 1") as e:
        train_in_subprocess(request, tmp_path / "train.log")
    assert "FaultInjected: fault injected at train.step" in str(e.value)  # the rank's own error
    assert not e.value.retryable
    assert len(list(once.iterdir())) == 1  # one rank failed; the launcher stopped the other
    assert "FaultInjected" in (tmp_path / "train.log").read_text()


def test_a_killed_launcher_leaves_no_rank_behind(tiny_model, tmp_path):
    request = _request(tmp_path, _config(tmp_path, epochs=50.0), tiny_model)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            train_in_subprocess(request)
        except BaseException as e:
            failure.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 300
    launcher, ranks = None, []
    # A rank loads torch only in the recipe, after it has set its death signal.
    while len([p for p in ranks if "libtorch" in _maps(p)]) < 2:
        assert time.monotonic() < deadline and thread.is_alive(), "the ranks never started"
        time.sleep(0.2)
        launcher = launcher or _child(os.getpid(), "accelerate.commands.launch")
        ranks = [p for p in _children(launcher) if "tasks.train" in _cmdline(p)] if launcher else []
    assert len(ranks) == 2
    os.kill(launcher, signal.SIGKILL)
    try:
        deadline = time.monotonic() + 30
        while [p for p in ranks if _alive(p)] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [p for p in ranks if _alive(p)], "ranks outlived their launcher"
        # Orphans would also hold the launcher's output pipe open: the worker would never end.
        thread.join(60)
        (error,) = failure
        assert isinstance(error, WorkerError) and error.code == -9 and error.retryable
    finally:
        for p in ranks:
            if _alive(p):
                os.kill(p, signal.SIGKILL)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for f in Path(f"/proc/{pid}/task").glob("*/children"):
        out += [int(x) for x in f.read_text().split()]
    return out


def _child(pid: int, words: str) -> int | None:
    found = [c for c in _children(pid) if words in _cmdline(c)]
    return found[0] if found else None


def _maps(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return ""
