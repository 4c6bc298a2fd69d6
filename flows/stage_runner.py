"""Where a generation's stage runs: inline, as a task of the generation flow (the default), or
as a flow run of the stage's deployment on the work pool the config names
(`cluster.stage_runner: deployment`, pools in `cluster.pools`).

Either way the stage's only result is its folder with its manifest on `runs_dir`, so the
generation flow goes on the same after both: it hands the next stage paths, and reads outputs
from manifests. A deployed stage's flow run is checked on its final state first, then on the
manifest it must have left: a completed run without one wrote to a `runs_dir` the flow does not
see (not shared with that pool's workers). Only JSON crosses to a worker: the config as a
dict and the task's other arguments, paths as strings. Deployments are named
`stage-<kind>/<pool>` (`flows.deployments.deploy_stages` registers them), so flywheels on the
same pools share them.
"""

from __future__ import annotations

import inspect
import logging
import time
from pathlib import Path

from prefect import get_run_logger
from prefect.exceptions import MissingContextError

from tasks import store
from tasks.config import FlywheelConfig
from tasks.config_cluster import StagePools
from tasks.stages.common import completed


class StageRunError(RuntimeError):
    """A stage cannot run where the config places it: a runs_dir the pools cannot share, no
    deployment, a flow run that did not complete or completed without its manifest."""


STAGE_KINDS = tuple(StagePools.model_fields)
"""The stages that can run on a pool: the fields of `cluster.pools`, the keys of
`flows.stage_flows.STAGE_FLOWS`. Read from the config so that a run that places no stage never
imports the stage flows (defining them builds each one's parameter schema, ~0.24 CPU-s a run)."""


def flow_name(kind: str) -> str:
    """The name of stage `kind`'s flow (`flows.stage_flows`)."""
    return f"stage-{kind}"


def deployment_name(kind: str, pool: str) -> str:
    """The deployment that runs stage `kind` on work pool `pool`."""
    return f"{flow_name(kind)}/{pool}"


def stage_pools(cfg: FlywheelConfig) -> dict[str, str]:
    """Stage kind -> the pool `cluster.pools` names for it (kinds without one stay inline)."""
    return {k: p for k in STAGE_KINDS if (p := getattr(cfg.cluster.pools, k)) is not None}


def placement(cfg: FlywheelConfig) -> dict[str, str]:
    """Stage kind -> the pool it runs on now; empty when every stage runs inline."""
    return stage_pools(cfg) if cfg.cluster.stage_runner == "deployment" else {}


def check_placement(cfg: FlywheelConfig) -> None:
    """Refuse, before any work, a config whose stages would run elsewhere with paths that only
    mean something here: the workers of every pool must see the same `runs_dir`."""
    if placement(cfg) and not cfg.runs_dir.is_absolute():
        raise StageRunError(
            f"runs_dir: {cfg.runs_dir} is relative, but cluster.stage_runner is deployment: "
            "give the absolute path of a folder every pool's workers share "
            f"(--set runs_dir={cfg.runs_dir.resolve()} on one machine)"
        )


def stage_folder(cfg: FlywheelConfig, kind: str, arguments: dict) -> Path:
    """The folder stage `kind` writes, from its task's arguments: the eval stage is told its
    folder; every other stage writes its own of its generation."""
    if kind == "eval":
        return Path(arguments["folder"])
    return store.stage_dir(cfg.flywheel_dir, arguments["generation"], kind)


def stage_parameters(cfg: FlywheelConfig, task, args: tuple, kwargs: dict) -> dict:
    """The stage flow's parameters for `task(cfg, *args, **kwargs)`: the config as a dict and
    the task's other arguments by name, paths as strings."""
    bound = inspect.signature(task.fn).bind(cfg, *args, **kwargs)
    bound.apply_defaults()
    _, *names = bound.arguments
    params = {n: str(v) if isinstance(v, Path) else v for n, v in bound.arguments.items()}
    return {"config": cfg.model_dump(mode="json")} | {n: params[n] for n in names}


def run_stage(cfg: FlywheelConfig, kind: str, task, *args, **kwargs) -> Path:
    """Run stage `kind` (its task, called as `task(cfg, *args, **kwargs)`) where the config
    places it, and return its folder once its manifest has landed."""
    bound = inspect.signature(task.fn).bind(cfg, *args, **kwargs).arguments
    folder = stage_folder(cfg, kind, bound)
    pool = placement(cfg).get(kind)
    if pool is None:
        task(cfg, *args, **kwargs)
        return folder
    if completed(folder) is not None:
        return folder  # landed before (a resumed run): no flow run needed to find that out
    _run_deployment(cfg, kind, pool, stage_parameters(cfg, task, args, kwargs), folder)
    if completed(folder) is None:
        raise StageRunError(
            f"stage {kind} on pool {pool!r}: its flow run completed but {folder} has no "
            "manifest; the pool's workers write to another runs_dir (it must be one shared "
            "folder, at the same absolute path)"
        )
    return folder


def _run_deployment(cfg: FlywheelConfig, kind: str, pool: str, params: dict, folder: Path):
    """One flow run of the stage's deployment, waited for; raises unless it completed."""
    from prefect.context import TagsContext
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    c = cfg.cluster
    name = deployment_name(kind, pool)
    where = f"stage {kind} on pool {pool!r}"
    log = _logger()
    log.info("%s: running deployment %s for %s", where, name, folder)
    started = time.monotonic()
    try:
        run = run_deployment(
            name,
            parameters=params,
            flow_run_name=f"{cfg.name}/{folder.parent.name}/{folder.name}",
            timeout=c.timeout_s,
            poll_interval=c.poll_s,
            tags=sorted(TagsContext.get().current_tags | {f"stage:{kind}"}),
        )
    except ObjectNotFound:
        raise StageRunError(
            f"{where}: no deployment {name}; register the stage deployments with "
            "`flywheel deploy-stages CONFIG` (and start a worker of the pool)"
        ) from None
    state = run.state
    if state is None or not state.is_final():
        _cancel(run.id)
        raise StageRunError(
            f"{where}: flow run {run.name} ({run.id}) still "
            f"{state.name if state else 'without a state'} after cluster.timeout_s="
            f"{c.timeout_s:g} s (is a worker of pool {pool!r} running?); it was cancelled"
        )
    if not state.is_completed():
        raise StageRunError(
            f"{where}: flow run {run.name} ({run.id}) ended {state.name}: {state.message or ''}"
        )
    # The wait as the flow saw it, queueing and the worker's process start included
    # (bench/bench_dispatch.py reads it back from the flow run's logs).
    log.info("%s: flow run %s completed in %.2f s", where, run.name, time.monotonic() - started)


def _logger() -> logging.Logger | logging.LoggerAdapter:
    """The flow run's logger (its lines reach the Prefect UI); this module's outside a flow."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


def _cancel(flow_run_id) -> None:
    """Cancel a flow run the flow stops waiting for, so it cannot land its stage behind a
    resumed run's back."""
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(flow_run_id, Cancelling(), force=True)
