import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
TINY = ROOT / "configs" / "tiny.yaml"


@pytest.fixture(scope="session")
def runs_dir(tmp_path_factory) -> Path:
    """One runs folder for the session, so the tiny base model is made once."""
    return tmp_path_factory.mktemp("runs")


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
