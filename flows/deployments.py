"""Schedules: a flywheel as a Prefect deployment that advances one generation per run.

`serve` runs the schedule on this machine (Prefect's runner, no work pool needed); `deploy`
registers it with a Prefect server for workers of a `process` work pool to pick up (the team
set-up: see README). Both pass the whole resolved config as the deployment's parameter with
`advance=1`, so every scheduled run continues the same flywheel from its champion, and both
cap the deployment at one active run (later ones wait: ENQUEUE).

`one_run_at_a_time` is the guard that holds across deployments, CLI runs and schedules alike:
an exclusive lock on a file in the flywheel's folder. The kernel drops it the moment its
process dies, SIGKILL and OOM included, so a killed run never blocks the resume. (A Prefect
global concurrency limit would be the other choice; its slots leak on a local ephemeral API,
which runs no lease repossessor, so a killed run would block its flywheel for good.)
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import logging
from collections.abc import Iterator
from pathlib import Path

from tasks.config import FlywheelConfig

ROOT = Path(__file__).resolve().parents[1]
ENTRYPOINT = "flows/flywheel.py:flywheel"
LOCK_FILE = ".run.lock"


@contextlib.contextmanager
def one_run_at_a_time(flywheel_dir: Path, log: logging.Logger | None = None) -> Iterator[None]:
    """Hold the flywheel's run lock, waiting while another run of the same flywheel holds it."""
    flywheel_dir = Path(flywheel_dir)
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


def _deployment_args(cfg: FlywheelConfig, cron: str | None, interval: float | None) -> dict:
    if (cron is None) == (interval is None):
        raise ValueError("give exactly one of --cron or --interval")
    # Scheduled runs may start in another folder: pin the runs to an absolute path.
    cfg = cfg.model_copy(update={"runs_dir": cfg.runs_dir.resolve()})
    return {
        "cron": cron,
        "interval": dt.timedelta(seconds=interval) if interval is not None else None,
        "parameters": {"config": cfg.model_dump(mode="json"), "advance": 1},
        "tags": ["flywheel", cfg.name],
        "description": f"Flywheel {cfg.name}: one generation per scheduled run.",
    }


def serve(cfg: FlywheelConfig, cron: str | None = None, interval: float | None = None) -> None:
    """Create the deployment and run its schedule on this machine until interrupted."""
    from flows.flywheel import flywheel

    flywheel.serve(name=cfg.name, global_limit=1, **_deployment_args(cfg, cron, interval))


def deploy(
    cfg: FlywheelConfig,
    work_pool: str,
    cron: str | None = None,
    interval: float | None = None,
) -> str:
    """Register the deployment with the Prefect server for a `process` work pool; its id."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client:
        with contextlib.suppress(ObjectAlreadyExists):
            client.create_work_pool(WorkPoolCreate(name=work_pool, type="process"))
    remote = flow.from_source(source=str(ROOT), entrypoint=ENTRYPOINT)
    deployment_id = remote.deploy(
        name=cfg.name,
        work_pool_name=work_pool,
        build=False,
        push=False,
        concurrency_limit=ConcurrencyLimitConfig(
            limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE
        ),
        print_next_steps=False,
        **_deployment_args(cfg, cron, interval),
    )
    return str(deployment_id)
