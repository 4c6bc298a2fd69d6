"""What MLflow's UI reads, read back through a real tracking server's REST API: the flywheel's
experiment carries the model-training kind (so the UI opens it on its runs, not on the GenAI
traces overview), and the headline figures lead the chart view, one point per generation."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from flows.servers import mlflow_server
from tasks.gate import GateDecision
from tasks.outputs import (
    Champion,
    CurateOutputs,
    EvalOutputs,
    GateOutputs,
    GenerateOutputs,
    Generation,
    SeedsOutputs,
    TrainOutputs,
)
from tasks.projections import HEADLINE, generation_metrics
from tasks.tracking import EXPERIMENT_KIND, make_tracker

pytestmark = pytest.mark.slow

PASS = {1: 0.20, 2: 0.26}
GREEDY = {1: 0.30, 2: 0.33}


def _generation(g: int, folder: Path) -> Generation:
    report = {"pass@1": PASS[g], "greedy_pass@1": GREEDY[g], "format_rate": 0.8 + g / 100}
    decision = GateDecision(True, "pass@1", PASS[g] - 0.05, PASS[g], 0.05, 0.0, "ok")
    return Generation(
        g,
        folder,
        seeds=SeedsOutputs(count=8, difficulty=1.0, hash="s"),
        generate=GenerateOutputs(model="m", params={}, samples=32, hash="g"),
        curate=CurateOutputs({"accept": 4 * g}, 3, g / 8, 0.5, "c"),
        train=TrainOutputs(base_model="m", train_rows=3),
        eval=EvalOutputs(report, "m", {}),
        gate=GateOutputs(decision, Champion("m", report, g), None),
    )


def _get(url: str, path: str, **query: str) -> dict:
    with urllib.request.urlopen(f"{url}{path}?{urllib.parse.urlencode(query)}", timeout=30) as r:
        return json.loads(r.read())


def chart_order(keys: list[str]) -> list[str]:
    """Metric keys in the order MLflow 3's chart view shows them: one section per prefix before
    the last `/`, named sections in name order, then the unprefixed "Model metrics", charts
    sorted by key inside each (`RunsChartsCardConfig.getBaseChartAndSectionConfigs`)."""

    def section(k: str) -> tuple[int, str]:
        prefix = k.rpartition("/")[0]
        return (0, prefix) if prefix else (1, "")

    return sorted(keys, key=lambda k: (section(k), k))


def test_experiment_kind_and_headline_metrics_through_the_rest_api(tmp_path, monkeypatch):
    server = mlflow_server(tmp_path / "mlflow-server")
    url = server.url
    server.start()
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        fw = tmp_path / "runs" / "ui"
        tracker = make_tracker(True, fw.parent, "ui", "ui-model")
        tracker.start("{}", fw)
        for g in (1, 2):
            tracker.start_generation(g, fw / f"gen-{g:04d}")
            tracker.log_metrics(generation_metrics(_generation(g, fw / f"gen-{g:04d}")), step=g)
            tracker.end_generation()
        tracker.end()

        exp = _get(url, "/api/2.0/mlflow/experiments/get-by-name", experiment_name="ui")
        tags = {t["key"]: t["value"] for t in exp["experiment"]["tags"]}
        assert tags["mlflow.experimentKind"] == EXPERIMENT_KIND["mlflow.experimentKind"]
        assert tags["mlflow.experimentKind"] == "custom_model_development"

        # The flywheel's run holds the trajectory: one point per generation.
        run = tracker.parent_run_id
        history = _get(
            url,
            "/api/2.0/mlflow/metrics/get-history",
            run_id=run,
            metric_key=f"{HEADLINE}1.pass_at_1",
        )["metrics"]
        assert [(m["step"], m["value"]) for m in history] == [(1, PASS[1]), (2, PASS[2])]
        greedy = _get(
            url,
            "/api/2.0/mlflow/metrics/get-history",
            run_id=run,
            metric_key=f"{HEADLINE}2.greedy_pass_at_1",
        )["metrics"]
        assert [m["value"] for m in greedy] == [GREEDY[1], GREEDY[2]]

        logged = _get(url, "/api/2.0/mlflow/runs/get", run_id=run)["run"]["data"]
        keys = [m["key"] for m in logged["metrics"]]
        assert chart_order(keys)[:5] == [
            f"{HEADLINE}1.pass_at_1",
            f"{HEADLINE}2.greedy_pass_at_1",
            f"{HEADLINE}3.format_rate",
            f"{HEADLINE}4.accept_rate",
            f"{HEADLINE}5.gate_delta",
        ]

        # An experiment made before kinds were set gets one when a flywheel opens it.
        from mlflow import MlflowClient

        old = MlflowClient(url).create_experiment("older")
        make_tracker(True, fw.parent, "older", "older-model")
        exp = _get(url, "/api/2.0/mlflow/experiments/get", experiment_id=old)
        tags = {t["key"]: t["value"] for t in exp["experiment"]["tags"]}
        assert tags["mlflow.experimentKind"] == "custom_model_development"
    finally:
        server.stop()
