"""The end-to-end tests' runs folder, CLI environment and `flywheel` runner.

The tests spread over the xdist workers. Each worker has its own runs folder (its own MLflow
database and Prefect home), whose `models/` links to one folder for the whole session: the tiny
config's base model is made there once, under a file lock, before any run needs it, so no two
runs ever write the same model folder.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import built_once

ROOT = Path(__file__).parents[2]
TINY = ROOT / "configs" / "tiny.yaml"


def _make_base_model(models: Path) -> None:
    """The tiny config's suite and base model, made the way `flywheel run` makes them (its
    stages), in a runs folder whose `models/` is `models`."""
    from tasks.config import load_config
    from tasks.stages import base_model_stage, suite_stage

    runs = models.parent / "e2e-warm"
    runs.mkdir(exist_ok=True)
    models.mkdir(exist_ok=True)
    if not (runs / "models").is_symlink():
        (runs / "models").symlink_to(models)
    cfg = load_config(TINY, runs_dir=str(runs), name="warm")
    base_model_stage.fn(cfg, suite_stage.fn(cfg))


@pytest.fixture(scope="session")
def runs_dir(tmp_path_factory, shared_dir) -> Path:
    """This worker's runs folder; the tiny base model in it is made once per session."""
    models = built_once(shared_dir / "e2e-models", _make_base_model)
    runs = tmp_path_factory.mktemp("runs")
    (runs / "models").symlink_to(models)
    return runs


@pytest.fixture(scope="session")
def cli_env(tmp_path_factory) -> dict:
    env = {
        k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL")
    }
    env["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect-home"))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def flywheel(args: list[str], env: dict, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        **kw,
    )
