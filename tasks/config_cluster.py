"""The flywheel config's placement section: where a generation's stages run.

`inline` (the default) runs every stage as a task of the generation flow, in its process.
`deployment` runs each heavy stage as a flow run of its Prefect deployment on a work pool, one
pool per kind of hardware (`flows/stage_runner.py`); the same config runs on one machine or on
GPU nodes by changing the pool names and `runs_dir` (a folder every pool's workers share), not
code. The gate always runs in the generation flow: it is a pure decision over two eval reports,
and its optional human approval pauses that flow run.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tasks.config_generation import Section

POOL_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class StagePools(Section):
    """The work pool each stage runs on when `cluster.stage_runner` is `deployment`."""

    seeds: str | None = Field(
        None,
        pattern=POOL_NAME,
        description="Pool of the seeds stage; null: inline (it is cheap unless seeds.sources "
        "asks the policy for rewrites or proposals, which load the engine: then a GPU pool).",
    )
    generate: str = Field("gpu-gen", pattern=POOL_NAME, description="Pool of generation.")
    curate: str = Field(
        "cpu",
        pattern=POOL_NAME,
        description="Pool of curation (a GPU pool when the judge or reward model is among "
        "curation.rewards).",
    )
    train: str = Field("gpu-train", pattern=POOL_NAME, description="Pool of training.")
    eval: str = Field("gpu-gen", pattern=POOL_NAME, description="Pool of evaluation.")


class ClusterConfig(Section):
    """How the generation flow runs its stages: inline, or as deployments on work pools."""

    stage_runner: Literal["inline", "deployment"] = Field(
        "inline",
        description="`inline`: each stage is a task of the generation flow; `deployment`: each "
        "stage with a pool is a flow run of its deployment (`flywheel deploy-stages`), picked "
        "up by a worker of that pool.",
    )
    pools: StagePools = StagePools()
    timeout_s: float = Field(
        86400.0,
        gt=0,
        description="Longest wait for one stage's flow run, queueing included; past it the run "
        "is cancelled and the generation stops naming the stage.",
    )
    poll_s: float = Field(
        1.0, gt=0, description="Seconds between two reads of a stage's flow-run state."
    )
