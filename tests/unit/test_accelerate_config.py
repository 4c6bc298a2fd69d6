"""`train.launcher: accelerate`: the shipped accelerate files, the settings a config refuses, the
command the worker starts (read back by accelerate's own parser), a rank's failure as a
WorkerError, and a rank writing no result. The launches themselves are in
tests/integration/test_accelerate_launch.py."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.config import FlywheelConfig
from tasks.config_training import accelerate_type
from tasks.requests import grpo_request, sft_request
from tasks.subproc import LAUNCHED_ENV, WorkerError
from tasks.train import launcher, rank_failure

ROOT = Path(__file__).resolve().parents[2]
FILES = ROOT / "configs" / "accelerate"
DDP = FILES / "ddp.yaml"


def accelerate(config: Path | str = DDP, processes: int = 2, **train) -> FlywheelConfig:
    return FlywheelConfig(
        train={
            "launcher": "accelerate",
            "num_processes": processes,
            "accelerate_config": str(config),
            **train,
        }
    )


@pytest.mark.parametrize(
    ("name", "kind"), [("ddp", "MULTI_GPU"), ("zero3", "DEEPSPEED"), ("fsdp", "FSDP")]
)
def test_each_shipped_file_is_an_accelerate_config_of_its_kind(name, kind):
    from accelerate.commands.config.config_args import load_config_from_file

    path = FILES / f"{name}.yaml"
    assert accelerate_type(path) == kind
    assert load_config_from_file(str(path)).distributed_type.value == kind  # accelerate's reader
    if kind != "MULTI_GPU":
        assert path.read_text().startswith("# GPUs only."), "the GPU-only files say so first"


def test_the_command_is_accelerate_launch_of_the_train_module():
    from accelerate.commands.launch import launch_command_parser

    request = sft_request(accelerate(processes=3), 1, "base", Path("t"), Path("o"))
    command = launcher(request)
    assert command[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    # What `accelerate launch` makes of it, read by its own parser.
    args = launch_command_parser().parse_args([*command[3:], "tasks.train", "req", "res"])
    assert (args.config_file, args.num_processes, args.module) == (str(DDP), 3, True)
    assert (args.training_script, args.training_script_args) == ("tasks.train", ["req", "res"])
    assert launcher(sft_request(FlywheelConfig(), 1, "base", Path("t"), Path("o"))) is None


def test_every_training_request_carries_the_launch():
    cfg = accelerate(grpo={"vllm_mode": "server", "vllm_server_url": "http://gpu-0:8000"})
    for build in (sft_request, grpo_request):
        request = build(cfg, 1, "base", Path("t"), Path("o"))
        assert (request.launcher, request.num_processes) == ("accelerate", 2)
        assert request.accelerate_config == str(DDP)
    grpo = grpo_request(cfg, 1, "base", Path("t"), Path("o"))
    assert (grpo.vllm_mode, grpo.vllm_server_url) == ("server", "http://gpu-0:8000")


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is not None, reason="deepspeed here")
def test_zero3_without_deepspeed_stops_before_launching():
    request = sft_request(accelerate(FILES / "zero3.yaml"), 1, "base", Path("t"), Path("o"))
    with pytest.raises(ValueError, match=r"train.accelerate_config: .*zero3.yaml runs DeepSpeed"):
        launcher(request)


@pytest.mark.parametrize(
    ("train", "words"),
    [
        ({"num_processes": 2}, "need train.launcher: accelerate"),
        ({"accelerate_config": str(DDP)}, "need train.launcher: accelerate"),
        ({"launcher": "accelerate"}, "train.accelerate_config: train.launcher accelerate needs"),
        (
            {"launcher": "accelerate", "num_processes": 2, "accelerate_config": "no/such.yaml"},
            "train.accelerate_config: no/such.yaml: cannot read it",
        ),
        (
            {"launcher": "accelerate", "num_processes": 1, "accelerate_config": str(DDP)},
            "train.num_processes: DDP .* needs at least 2 processes",
        ),
        ({"grpo": {"vllm_mode": "server"}}, "vllm_server_url is needed with vllm_mode server"),
        ({"grpo": {"vllm_server_url": "http://x:8000"}}, "and only then"),
        ({"grpo": {"vllm_mode": "remote"}}, "'colocate' or 'server'"),
    ],
)
def test_a_launch_that_could_not_run_is_refused_at_load(train, words):
    with pytest.raises(ValueError, match=words):
        FlywheelConfig(train=train)


@pytest.mark.parametrize("kind", ["MULTI_CPU", "NO"])
def test_a_file_accelerate_would_run_as_one_process_is_refused(tmp_path, kind):
    """The trap: under `accelerate launch` these go to the single-process launcher, which
    ignores --num_processes."""
    path = tmp_path / "cpu.yaml"
    path.write_text(f"distributed_type: '{kind}'\nnum_processes: 2\n")
    with pytest.raises(ValueError, match=f"distributed_type '{kind}' is not one.*single process"):
        accelerate(path)


SUMMARY = """torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
tasks.train FAILED
------------------------------------------------------------
Failures:
[1]:
  rank      : 0 (local_rank: 0)
  exitcode  : 1 (pid: 101)
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  rank      : 1 (local_rank: 1)
  exitcode  : {code} (pid: 102)  (SIGKILL)
============================================================
"""


@pytest.mark.parametrize(
    ("code", "retryable", "how"),
    [
        (-9, True, "killed by signal 9"),
        (1, False, "exited with status 1"),
        (75, True, "exited with status 75"),  # TransientError
    ],
)
def test_a_failed_launch_takes_the_status_of_its_first_failed_rank(code, retryable, how):
    tail = SUMMARY.replace("{code}", str(code))
    error = rank_failure(WorkerError("tasks.train exited with status 1; last output:\n" + tail, 1))
    assert (error.code, error.retryable) == (code, retryable)
    assert str(error).startswith(f"a training rank {how}") and "Root Cause" in str(error)


def test_a_launcher_that_died_itself_keeps_its_own_status():
    killed = WorkerError("tasks.train was killed by signal 9; last output:\nloading", -9)
    assert rank_failure(killed) is killed


RANK_WORKER = """
from tasks.subproc import worker_main

if __name__ == "__main__":
    worker_main(lambda request: {"ok": request["x"]})
"""


@pytest.mark.parametrize(
    ("env", "writes"),
    [
        ({LAUNCHED_ENV: "1", "RANK": "0"}, True),
        ({LAUNCHED_ENV: "1", "RANK": "1"}, False),
        ({"RANK": "1"}, True),  # a RANK the cluster set, not a launcher: an ordinary worker
    ],
    ids=["rank-0", "rank-1", "not-launched"],
)
def test_only_rank_0_of_a_launch_writes_the_result(tmp_path, env, writes):
    (tmp_path / "rank_worker.py").write_text(RANK_WORKER)
    (tmp_path / "req.json").write_text(json.dumps({"x": 1}))
    res = tmp_path / "res.json"
    base = {k: v for k, v in os.environ.items() if k not in (LAUNCHED_ENV, "RANK")}
    subprocess.run(
        [sys.executable, "-m", "rank_worker", str(tmp_path / "req.json"), str(res)],
        env={**base, "PYTHONPATH": f"{tmp_path}:{ROOT}", **env},
        check=True,
        timeout=60,
    )
    assert res.is_file() == writes
    if writes:
        assert json.loads(res.read_text()) == {"ok": 1}


@pytest.mark.parametrize(
    ("file", "ran", "world", "ok"),
    [
        ("ddp.yaml", "MULTI_CPU", 2, True),  # DDP without GPUs: gloo
        ("ddp.yaml", "MULTI_GPU", 2, True),
        ("ddp.yaml", "NO", 1, False),  # the `--cpu --num_processes 2` trap: one process ran
        ("fsdp.yaml", "MULTI_CPU", 2, False),  # FSDP without GPUs falls back to DDP
        ("fsdp.yaml", "FSDP", 2, True),
        ("zero3.yaml", "DEEPSPEED", 2, True),
        ("zero3.yaml", "MULTI_GPU", 2, False),
    ],
)
def test_a_rank_trains_only_what_the_request_asked_for(file, ran, world, ok):
    """`check_launch` on what accelerate reports (its state, faked here: the launches that
    produce these are GPU machines' or the traps'; ddp and fsdp on CPU run for real in
    tests/integration/test_accelerate_launch.py)."""
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from tasks.trainers.common import check_launch

    request = sft_request(accelerate(FILES / file), 1, "base", Path("t"), Path("o"))
    accelerator = SimpleNamespace(distributed_type=DistributedType(ran), num_processes=world)
    trainer = SimpleNamespace(accelerator=accelerator)
    if ok:
        check_launch(trainer, request)
    else:
        with pytest.raises(ValueError, match=f"train.accelerate_config: .*set up {ran} on {world}"):
            check_launch(trainer, request)


@pytest.mark.parametrize(
    "grpo",
    [{"vllm_mode": "colocate"}, {"vllm_mode": "server", "vllm_server_url": "http://gpu-0:8000"}],
    ids=["colocate", "server"],
)
def test_grpo_vllm_modes_stop_before_training_without_gpus(grpo):
    import torch

    from tasks.trainers.grpo import train_grpo

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the mode would run")
    request = grpo_request(FlywheelConfig(train={"grpo": grpo}), 1, "base", Path("t"), Path("o"))
    with pytest.raises(ValueError, match=f"train.grpo.vllm_mode: '{grpo['vllm_mode']}'.*has none"):
        train_grpo(request)
