"""`flywheel run` ends with how to open the UIs on its results: `make ui` only where that serves
exactly them, else the commands (or the remote servers' addresses) that do."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.cli import ROOT, ui_commands
from tasks.config import FlywheelConfig


@pytest.fixture
def local(monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return monkeypatch


def test_make_ui_for_the_repository_runs_folder(local):
    cfg = FlywheelConfig(runs_dir=ROOT / "runs")
    assert ui_commands(cfg) == [
        "UIs: make ui  (Prefect http://127.0.0.1:4200, MLflow http://127.0.0.1:5000)"
    ]
    quiet = FlywheelConfig(runs_dir=ROOT / "runs", tracking={"enabled": False})
    assert ui_commands(quiet) == ["UIs: make ui  (Prefect http://127.0.0.1:4200)"]


def test_commands_for_another_runs_folder(local, tmp_path):
    prefect, mlflow = ui_commands(FlywheelConfig(runs_dir=tmp_path))
    assert prefect.startswith("Prefect UI: ") and "prefect server start" in prefect
    assert f"ui --backend-store-uri sqlite:///{tmp_path.resolve()}/mlflow.db " in mlflow
    assert f"--default-artifact-root {tmp_path.resolve() / 'mlartifacts'}" in mlflow
    assert Path(mlflow.split()[2]).name == "mlflow"


def test_remote_servers_are_named(local):
    local.setenv("PREFECT_API_URL", "http://prefect.team:4200/api")
    local.setenv("MLFLOW_TRACKING_URI", "http://mlflow.team:5000")
    assert ui_commands(FlywheelConfig(runs_dir=ROOT / "runs")) == [
        "Prefect UI: http://prefect.team:4200",
        "MLflow UI: http://mlflow.team:5000",
    ]


def test_a_link_to_the_experiments_runs_in_the_model_training_view(local, tmp_path):
    link = "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning"
    cfg = FlywheelConfig(runs_dir=ROOT / "runs")
    assert ui_commands(cfg, "7")[-1] == f"MLflow runs: {link}"
    assert ui_commands(FlywheelConfig(runs_dir=tmp_path), "7")[-1] == f"MLflow runs: {link}"
    local.setenv("MLFLOW_TRACKING_URI", "http://mlflow.team:5000/")
    assert ui_commands(cfg, "7")[-1] == (
        "MLflow runs: http://mlflow.team:5000/#/experiments/7/runs?workflowType=machine_learning"
    )
    local.delenv("MLFLOW_TRACKING_URI")
    quiet = FlywheelConfig(runs_dir=ROOT / "runs", tracking={"enabled": False})
    assert ui_commands(quiet, "7") == ["UIs: make ui  (Prefect http://127.0.0.1:4200)"]
