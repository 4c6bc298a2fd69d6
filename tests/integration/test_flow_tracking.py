"""The flywheel flow under Prefect's test harness, recording to MLflow on a temporary SQLite
file; the runs, metrics, datasets and registered versions are read back."""

import pytest

from tasks import store
from tasks.config import load_config
from tests.runs import TINY

pytestmark = pytest.mark.slow


def test_flow_records_generations_in_mlflow(tmp_path, monkeypatch, prefect_harness):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    from mlflow import MlflowClient

    from flows.flywheel import flywheel
    from tasks.tracking import default_tracking_uri

    cfg = load_config(TINY, runs_dir=str(tmp_path), name="flowtest", generations=1)
    rows = flywheel(cfg)
    from prefect.artifacts import Artifact

    report = Artifact.get("flowtest-gen-0001")
    table = Artifact.get("flowtest-generations")
    assert report.type == "markdown" and "# Generation 1" in report.data
    assert table.type == "table"
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        names_tags = [(t.name, set(t.tags)) for t in client.read_task_runs()]
    assert ("gen-0001/generate", {"flywheel", "flowtest", "gen-0001"}) in names_tags
    assert [r["gen"] for r in rows] == [1]
    assert rows[0]["challenger pass@1"] is not None

    client = MlflowClient(default_tracking_uri(tmp_path))
    exp = client.get_experiment_by_name("flowtest")
    runs = client.search_runs([exp.experiment_id])
    parent = [r for r in runs if r.data.tags.get("flywheel.role") == "flywheel"]
    child = [r for r in runs if r.data.tags.get("flywheel.role") == "generation"]
    assert len(parent) == 1 and len(child) == 1
    assert child[0].data.tags["mlflow.parentRunId"] == parent[0].info.run_id
    assert parent[0].info.status == "FINISHED" and child[0].info.status == "FINISHED"
    assert parent[0].data.params["sampling.n"] == "4"
    history = client.get_metric_history(parent[0].info.run_id, "champion.pass_at_1")
    assert sorted(m.step for m in history) == [0, 1]
    m = child[0].data.metrics
    assert (
        m["curate.accepted"]
        == store.read_manifest(tmp_path / "flowtest" / "gen-0001" / "curate").outputs["accepted"]
    )
    # Seeds by source, diversity and the collapse guard reach MLflow.
    assert m["seeds.origin.generator"] == 48
    assert 0 < m["diversity.generated.distinct_2"] <= 1
    assert m["diversity.accepted.answer_entropy"] >= 0 and m["curate.reasoning_paths"] >= 0
    guards = store.read_manifest(tmp_path / "flowtest" / "gen-0001" / "gate").outputs["decision"][
        "guards"
    ]
    assert {"collapse.distinct_2", "collapse.answer_entropy"} <= set(guards)
    assert m["gate.collapse.distinct_2.regression"] == guards["collapse.distinct_2"]["regression"]
    contexts = {i.tags[0].value for i in child[0].inputs.dataset_inputs}
    assert contexts == {"seeds", "training"}

    plots = [a.path for a in client.list_artifacts(parent[0].info.run_id, "plots")]
    assert plots == ["plots/trajectory.png"]
    assert (tmp_path / "flowtest" / "trajectory.png").stat().st_size > 10_000

    versions = client.search_model_versions("name='flowtest'")
    assert len(versions) == 1
    mv = versions[0]
    assert mv.tags["flywheel.generation"] == "1"
    assert mv.tags["lineage.gate"] in ("promoted", "rejected")
    assert client.get_model_version_by_alias("flowtest", "challenger").version == mv.version
    promoted = store.read_manifest(tmp_path / "flowtest" / "gen-0001" / "gate").outputs["decision"][
        "promote"
    ]
    aliases = client.get_registered_model("flowtest").aliases
    assert ("champion" in aliases) == promoted
