"""Schedules: a flywheel as a Prefect deployment that advances one generation per run.

`serve` runs the schedule on this machine (Prefect's runner, no work pool needed); `deploy`
registers it with a Prefect server for workers of a `process` work pool to pick up (the team
set-up: see README). Both pass the whole resolved config as the deployment's parameter with
`advance=1`, so every scheduled run continues the same flywheel from its champion, and both
cap the deployment at one active run (later ones wait: ENQUEUE). The guard that also holds
across CLI runs is the flow's own run lock (flows/run_lock.py).

`deploy_stages` registers the stages' own deployments, one per stage kind on the work pool the
config names, for a flywheel that runs its stages on pools (`cluster.stage_runner: deployment`,
flows/stage_runner.py).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from pathlib import Path

from flows.flywheel import flywheel
from tasks.config import FlywheelConfig

ROOT = Path(__file__).resolve().parents[1]
ENTRYPOINT = "flows/flywheel.py:flywheel"


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


def deploy_stages(cfg: FlywheelConfig) -> dict[str, str]:
    """Register the deployment of each stage kind on the pool `cluster.pools` names for it
    (`stage-<kind>/<pool>`, a `process` pool made when missing), for
    `cluster.stage_runner: deployment`; deployment name -> id. The code is this checkout: a
    worker runs it in this folder, so on other machines it must lie at the same path."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    from flows.stage_flows import STAGE_FLOWS
    from flows.stage_runner import deployment_name, stage_pools

    pools = stage_pools(cfg)
    with get_client(sync_client=True) as client:
        for pool in sorted(set(pools.values())):
            with contextlib.suppress(ObjectAlreadyExists):
                client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
    out = {}
    for kind, pool in pools.items():
        entrypoint = f"flows/stage_flows.py:{STAGE_FLOWS[kind].fn.__name__}"
        remote = flow.from_source(source=str(ROOT), entrypoint=entrypoint)
        out[deployment_name(kind, pool)] = str(
            remote.deploy(
                name=pool,
                work_pool_name=pool,
                build=False,
                push=False,
                print_next_steps=False,
                tags=["flywheel", f"stage:{kind}"],
                description=f"The {kind} stage of flywheels whose cluster.pools.{kind} is {pool}.",
            )
        )
    return out
