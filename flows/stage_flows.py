"""The heavy stages as flows of their own, for `cluster.stage_runner: deployment`.

One flow per stage kind, deployed once per work pool (`flows.deployments.deploy_stages`) and
run by a worker of that pool. Each takes the config and JSON values only (paths as strings,
named as the stage task names its arguments) and calls the stage's task, as the generation
flow does inline: its result is the stage folder and its manifest on the shared `runs_dir`,
which the generation flow reads back (`flows.stage_runner`). What a flow returns is the folder,
for the UI; nothing is read from Prefect's result storage.

Workers load this module by path: no `from __future__ import annotations` here (Prefect would
not resolve the config's pydantic type for its parameter schema).
"""

from pathlib import Path

from prefect import flow

from tasks.config import FlywheelConfig
from tasks.stages import curate_stage, eval_stage, generate_stage, seeds_stage, train_stage


@flow(name="stage-seeds")
def seeds_flow(
    config: FlywheelConfig, generation: int, suite_folder: str, model_path: str | None = None
) -> str:
    return str(seeds_stage(config, generation, Path(suite_folder), model_path))


@flow(name="stage-generate")
def generate_flow(
    config: FlywheelConfig, generation: int, model_path: str, seeds_folder: str
) -> str:
    return str(generate_stage(config, generation, model_path, Path(seeds_folder)))


@flow(name="stage-curate")
def curate_flow(config: FlywheelConfig, generation: int, generate_folder: str) -> str:
    return str(curate_stage(config, generation, Path(generate_folder)))


@flow(name="stage-train")
def train_flow(config: FlywheelConfig, generation: int, base_model: str) -> str:
    return str(train_stage(config, generation, base_model))


@flow(name="stage-eval")
def eval_flow(
    config: FlywheelConfig, folder: str, model_path: str, suite_folder: str, label: str
) -> str:
    eval_stage(config, Path(folder), model_path, Path(suite_folder), label=label)
    return folder


STAGE_FLOWS = {
    "seeds": seeds_flow,
    "generate": generate_flow,
    "curate": curate_flow,
    "train": train_flow,
    "eval": eval_flow,
}
"""Stage kind (a field of `cluster.pools`) -> its flow."""
