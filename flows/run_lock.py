"""One run per flywheel at a time, across deployments, CLI runs and schedules alike.

The guard is an exclusive lock on a file in the flywheel's folder. The kernel drops it the
moment its process dies, SIGKILL and OOM included, so a killed run never blocks the resume. (A
Prefect global concurrency limit would be the other choice; its slots leak on a local ephemeral
API, which runs no lease repossessor, so a killed run would block its flywheel for good.)
With `FLYWHEEL_LOCK_URL` set (a team's PostgreSQL), the lock is an advisory lock there instead,
shared by every machine and as dead with its holder (`flows/pg_lock.py`).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path

LOCK_FILE = ".run.lock"


@contextlib.contextmanager
def one_run_at_a_time(flywheel_dir: Path, log: logging.Logger | None = None) -> Iterator[None]:
    """Hold the flywheel's run lock, waiting while another run of the same flywheel holds it."""
    flywheel_dir = Path(flywheel_dir)
    if url := os.environ.get("FLYWHEEL_LOCK_URL"):
        from flows.pg_lock import advisory_lock

        with advisory_lock(url, flywheel_dir.name, log):
            yield
        return
    flywheel_dir.mkdir(parents=True, exist_ok=True)
    with open(flywheel_dir / LOCK_FILE, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if log:
                log.warning("another run of %s is active; waiting for it", flywheel_dir.name)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
