"""The training stage's worker: runs one recipe from `tasks.trainers` in its own process, or in
several under `accelerate launch`.

The orchestrator calls `train_in_subprocess` with a training request (`tasks.requests`: paths
and hyperparameters, never data or models); it crosses as JSON with its recipe's `mode`, the
worker rebuilds it (`tasks.requests.from_json`: a missing or unknown field is named) and returns
the recipe's metrics. The child process returns all of training's memory to the OS when it
exits, and a crash or a `NonFiniteLoss` surfaces as a `WorkerError` carrying the log tail.

`train.launcher: accelerate` starts the worker as `accelerate launch --config_file
<train.accelerate_config> --num_processes <train.num_processes> -m tasks.train req res`: every
process reads the same request, the Trainer shards the data over them, only rank 0 saves the
model and writes the result (`tasks.subproc.worker_main`). When a rank fails, torchrun stops
the others and the launcher exits 1 whatever the rank died of; the `WorkerError` carries the
first failed rank's status instead (torchrun's "Root Cause" in the log), so a rank killed by a
signal stays retryable and a rank's error does not.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import typing
from pathlib import Path

from tasks.config_training import accelerate_type
from tasks.requests import TrainRequest, from_json, to_json
from tasks.subproc import WorkerError, run_worker, worker_main

REQUESTS = {cls.mode: cls for cls in typing.get_args(TrainRequest)}

# torchrun's failure summary: the first failed rank's exit status, under "Root Cause".
ROOT_CAUSE = re.compile(r"Root Cause[^\n]*\n(?:.*\n)*?\s*exitcode\s*:\s*(-?\d+)")


def main(request: dict) -> dict:
    """Run the recipe of `request["mode"]` on the request the other keys rebuild; return metrics."""
    data = dict(request)
    mode = data.pop("mode", None)
    if mode not in REQUESTS:
        raise ValueError(f"unknown training mode {mode!r}; known: {sorted(REQUESTS)}")
    typed = from_json(REQUESTS[mode], data)
    # Imported here, not at the top, so the orchestrator can import this module for
    # `train_in_subprocess` without loading torch and TRL into its own process.
    import torch

    from tasks.trainers import recipe

    metrics = recipe(mode)(typed)
    if torch.distributed.is_initialized():
        # Under `accelerate launch`: without this, gloo's threads are torn down with the
        # interpreter, and a rank that had finished aborted now and then at exit ("terminate
        # called without an active exception", SIGABRT), failing a completed run. Only after
        # success: destroying the group while another rank is stuck in a collective would hang.
        torch.distributed.destroy_process_group()
    # Recorded beside the figures: on CPU the trained weights depend on it (`tasks.threads`).
    return {**metrics, "torch_threads": torch.get_num_threads()}


def launcher(request: TrainRequest) -> list[str] | None:
    """The command in front of `tasks.train`: None (`python -m`) for `train.launcher: local`;
    else `accelerate launch --config_file F --num_processes N -m`, run as this Python's
    `-m accelerate.commands.launch` (the same command, from this environment whatever PATH
    says). A DeepSpeed file where deepspeed is not installed stops here, before any process."""
    if request.launcher == "local":
        return None
    config = request.accelerate_config
    if accelerate_type(config) == "DEEPSPEED" and importlib.util.find_spec("deepspeed") is None:
        raise ValueError(
            f"train.accelerate_config: {config} runs DeepSpeed (distributed_type DEEPSPEED) and "
            "the deepspeed package is not installed here; install it on the GPU machine that "
            "trains, or use configs/accelerate/ddp.yaml"
        )
    return [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(config),
        "--num_processes", str(request.num_processes),
        "-m",
    ]  # fmt: skip


def rank_failure(error: WorkerError) -> WorkerError:
    """A failed launch as the failure of its first failed rank: that rank's exit status (from
    torchrun's summary in the log tail) as the error's code; the launcher's when none is shown
    (the launcher itself failed, or was killed)."""
    found = ROOT_CAUSE.search(str(error))
    if found is None:
        return error
    code = int(found.group(1))
    how = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
    return WorkerError(f"a training rank {how} ({error})", code)


def train_in_subprocess(request: TrainRequest, log_path: Path | None = None) -> dict:
    """Run `main` on `request` in a fresh Python process, or in `train.num_processes` under
    accelerate; the output is also kept in `log_path`."""
    command = launcher(request)
    wire = {"mode": request.mode, **to_json(request)}
    try:
        return run_worker("tasks.train", wire, log_path, command)
    except WorkerError as e:
        if command is None:
            raise
        raise rank_failure(e) from None


if __name__ == "__main__":
    worker_main(main)
