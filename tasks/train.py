"""The training stage's worker: runs one recipe from `tasks.trainers` in its own process.

The orchestrator calls `train_in_subprocess` with a training request (`tasks.requests`: paths
and hyperparameters, never data or models); it crosses as JSON with its recipe's `mode`, the
worker rebuilds it (`tasks.requests.from_json`: a missing or unknown field is named) and returns
the recipe's metrics. The child process returns all of training's memory to the OS when it
exits, and a crash or a `NonFiniteLoss` surfaces as a `WorkerError` carrying the log tail.
"""

from __future__ import annotations

import typing
from pathlib import Path

from tasks.requests import TrainRequest, from_json, to_json
from tasks.subproc import run_worker, worker_main

REQUESTS = {cls.mode: cls for cls in typing.get_args(TrainRequest)}


def main(request: dict) -> dict:
    """Run the recipe of `request["mode"]` on the request the other keys rebuild; return metrics."""
    data = dict(request)
    mode = data.pop("mode", None)
    if mode not in REQUESTS:
        raise ValueError(f"unknown training mode {mode!r}; known: {sorted(REQUESTS)}")
    typed = from_json(REQUESTS[mode], data)
    # Imported here, not at the top, so the orchestrator can import this module for
    # `train_in_subprocess` without loading torch and TRL into its own process.
    from tasks.trainers import recipe

    return recipe(mode)(typed)


def train_in_subprocess(request: TrainRequest, log_path: Path | None = None) -> dict:
    """Run `main` on `request` in a fresh Python process; its output is also kept in `log_path`."""
    return run_worker("tasks.train", {"mode": request.mode, **to_json(request)}, log_path)


if __name__ == "__main__":
    worker_main(main)
