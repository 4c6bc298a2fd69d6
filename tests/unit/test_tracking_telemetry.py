"""MLflow's telemetry is off unless the user turns it on: its settings thread removes a variable
from os.environ while REST calls iterate it (see `tasks.tracking`). The tracking module sets
MLflow's own switch before MLflow is imported, and leaves a user's setting alone. A fresh
interpreter, so no earlier import decides."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECK = "import os, sys, tasks.tracking\nprint(os.environ.get('MLFLOW_DISABLE_TELEMETRY'))\n"


@pytest.mark.parametrize("user,seen", [(None, "true"), ("false", "false")])
def test_telemetry_is_off_unless_the_user_turns_it_on(user, seen):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_DISABLE_TELEMETRY"}
    if user is not None:
        env["MLFLOW_DISABLE_TELEMETRY"] = user
    out = subprocess.run(
        [sys.executable, "-c", CHECK],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == seen
