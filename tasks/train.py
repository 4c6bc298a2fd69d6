"""The training stage's worker: runs one recipe from `tasks.trainers` in its own process.

The orchestrator calls `train_in_subprocess` with a JSON request (`mode` plus that recipe's
keyword arguments: paths and hyperparameters, never data or models) and gets the recipe's
metrics back. The child process returns all of training's memory to the OS when it exits, and a
crash or a `NonFiniteLoss` surfaces as a `WorkerError` carrying the log tail.
"""

from __future__ import annotations

from pathlib import Path

from tasks.subproc import run_worker, worker_main


def main(request: dict) -> dict:
    """Run `TRAINERS[request["mode"]]` with the request's other keys; return its metrics."""
    # Imported here, not at the top, so the orchestrator can import this module for
    # `train_in_subprocess` without loading torch and TRL into its own process.
    from tasks.trainers import TRAINERS

    kwargs = dict(request)
    mode = kwargs.pop("mode", None)
    if mode not in TRAINERS:
        raise ValueError(f"unknown training mode {mode!r}; known: {sorted(TRAINERS)}")
    return TRAINERS[mode](**kwargs)


def train_in_subprocess(request: dict, log_path: Path | None = None) -> dict:
    """Run `main(request)` in a fresh Python process; its output is also kept in `log_path`."""
    return run_worker("tasks.train", request, log_path)


if __name__ == "__main__":
    worker_main(main)
