"""The stage runner's pure parts: the cluster config, where each stage runs, what crosses to a
worker (JSON only, named as the stage flows name their parameters), and the errors a deployed
stage ends with. The real dispatch runs in tests/integration/test_stage_deployments.py."""

import inspect
import json
import subprocess
import sys
from pathlib import Path
from uuid import uuid4

import pytest
from prefect.client.schemas.objects import FlowRun
from prefect.states import Completed, Failed, Running

from flows import stage_runner
from flows.stage_flows import STAGE_FLOWS
from flows.stage_runner import (
    STAGE_KINDS,
    StageRunError,
    check_placement,
    deployment_name,
    placement,
    run_stage,
    stage_folder,
    stage_parameters,
)
from tasks import store
from tasks.config import ConfigError, FlywheelConfig, load_config
from tasks.stages import curate_stage, eval_stage, generate_stage, seeds_stage, train_stage

TASKS = {
    "seeds": seeds_stage,
    "generate": generate_stage,
    "curate": curate_stage,
    "train": train_stage,
    "eval": eval_stage,
}


_DEPLOYED = {"stage_runner": "deployment"}


def _cfg(tmp_path: Path, **cluster) -> FlywheelConfig:
    return FlywheelConfig(name="fw", runs_dir=tmp_path / "runs", cluster=cluster)


def _calls(tmp_path: Path) -> dict[str, tuple[tuple, dict]]:
    """Each stage's arguments after the config, as the generation flow passes them."""
    gdir = tmp_path / "runs" / "fw" / "gen-0001"
    suite = tmp_path / "runs" / "fw" / "suite"
    return {
        "seeds": ((1, suite, "/models/base"), {}),
        "generate": ((1, "/models/base", gdir / "seeds"), {}),
        "curate": ((1, gdir / "generate"), {}),
        "train": ((1, "/models/base"), {}),
        "eval": ((gdir / "eval", str(gdir / "train" / "model"), suite), {"label": "gen-0001"}),
    }


def test_the_runner_names_each_stage_flow_without_importing_them():
    from tasks.config_cluster import StagePools

    assert STAGE_KINDS == tuple(STAGE_FLOWS) == tuple(StagePools.model_fields)
    for kind, flow in STAGE_FLOWS.items():
        assert deployment_name(kind, "cpu") == f"{flow.name}/cpu"
    probe = "import sys, flows.stage_runner; print('flows.stage_flows' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_defaults_run_inline_with_a_pool_per_kind():
    c = FlywheelConfig().cluster
    assert c.stage_runner == "inline"
    assert c.pools.model_dump() == {
        "seeds": None,
        "generate": "gpu-gen",
        "curate": "cpu",
        "train": "gpu-train",
        "eval": "gpu-gen",
    }
    assert placement(FlywheelConfig()) == {}


@pytest.mark.parametrize(
    "yaml_text,field,rule",
    [
        ("cluster:\n  stage_runner: ray\n", "cluster.stage_runner", "'inline' or 'deployment'"),
        ("cluster:\n  pools:\n    train: gpu/a\n", "cluster.pools.train", "pattern"),
        ("cluster:\n  pools:\n    judge: gpu\n", "cluster.pools.judge", "Extra inputs"),
        ("cluster:\n  timeout_s: 0\n", "cluster.timeout_s", "greater than 0"),
        ("cluster:\n  poll_s: -1\n", "cluster.poll_s", "greater than 0"),
    ],
)
def test_bad_cluster_values_name_the_field(tmp_path, yaml_text, field, rule):
    p = tmp_path / "bad.yaml"
    p.write_text(yaml_text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert field in str(e.value) and rule in str(e.value)


def test_placement_follows_the_pools(tmp_path):
    cfg = _cfg(tmp_path, stage_runner="deployment")
    assert placement(cfg) == {
        "generate": "gpu-gen",
        "curate": "cpu",
        "train": "gpu-train",
        "eval": "gpu-gen",
    }  # seeds inline by default; the gate always
    cfg = _cfg(tmp_path, stage_runner="deployment", pools={"seeds": "cpu", "train": "a100"})
    assert placement(cfg)["seeds"] == "cpu" and placement(cfg)["train"] == "a100"
    assert deployment_name("train", "a100") == "stage-train/a100"


def test_a_relative_runs_dir_is_refused_in_deployment_mode(tmp_path):
    check_placement(FlywheelConfig(runs_dir=Path("runs")))  # inline: any runs_dir
    check_placement(_cfg(tmp_path, stage_runner="deployment"))
    with pytest.raises(StageRunError, match=r"runs_dir: runs is relative.*--set runs_dir=/"):
        check_placement(
            FlywheelConfig(runs_dir=Path("runs"), cluster={"stage_runner": "deployment"})
        )


@pytest.mark.parametrize("kind", list(STAGE_FLOWS))
def test_parameters_are_json_and_match_the_stage_flow(tmp_path, kind):
    cfg = _cfg(tmp_path, stage_runner="deployment")
    args, kwargs = _calls(tmp_path)[kind]
    params = stage_parameters(cfg, TASKS[kind], args, kwargs)
    assert json.loads(json.dumps(params)) == params  # nothing but JSON crosses
    flow_params = list(inspect.signature(STAGE_FLOWS[kind].fn).parameters)
    assert list(params) == flow_params  # every argument has its flow parameter, by name
    assert FlywheelConfig.model_validate(params["config"]) == cfg
    expected = inspect.signature(TASKS[kind].fn).bind(cfg, *args, **kwargs)
    expected.apply_defaults()
    for name, value in list(expected.arguments.items())[1:]:
        assert params[name] == (str(value) if isinstance(value, Path) else value)


def test_each_stage_folder_is_where_its_task_writes(tmp_path):
    cfg = _cfg(tmp_path)
    for kind, (args, kwargs) in _calls(tmp_path).items():
        bound = inspect.signature(TASKS[kind].fn).bind(cfg, *args, **kwargs).arguments
        want = tmp_path / "runs" / "fw" / "gen-0001" / kind
        assert stage_folder(cfg, kind, bound) == want


class _Task:
    """Stands in for a stage task (its signature is the real task's): records its calls."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return "the task's own result"


def _land(folder: Path) -> None:
    with store.write_stage(folder, folder.name) as (_, out):
        out["hash"] = "h"


def test_inline_calls_the_task_as_before(tmp_path, monkeypatch):
    monkeypatch.setattr("prefect.deployments.run_deployment", _never)
    cfg = _cfg(tmp_path)
    task = _Task(generate_stage.fn)
    args, _ = _calls(tmp_path)["generate"]
    folder = run_stage(cfg, "generate", task, *args)
    assert task.calls == [((cfg, *args), {})]
    assert folder == tmp_path / "runs" / "fw" / "gen-0001" / "generate"
    # seeds has no pool by default: inline even in deployment mode
    seeds = _Task(seeds_stage.fn)
    deployed = _cfg(tmp_path, stage_runner="deployment")
    run_stage(deployed, "seeds", seeds, *_calls(tmp_path)["seeds"][0])
    assert len(seeds.calls) == 1


def _never(*args, **kwargs):
    raise AssertionError("no deployment run was expected")


def _dispatch(monkeypatch, state, land_to: Path | None = None):
    """`run_deployment` answering a flow run in `state` (landing `land_to` first); its calls."""
    calls = []

    def fake(name, **kwargs):
        calls.append((name, kwargs))
        if land_to is not None:
            _land(land_to)
        return FlowRun(id=uuid4(), flow_id=uuid4(), name="fw/gen-0001/train", state=state)

    monkeypatch.setattr("prefect.deployments.run_deployment", fake)
    return calls


def test_deployment_runs_the_pool_s_deployment_then_reads_the_manifest(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path, stage_runner="deployment", pools={"train": "a100"}, timeout_s=30)
    folder = tmp_path / "runs" / "fw" / "gen-0001" / "train"
    calls = _dispatch(monkeypatch, Completed(), land_to=folder)
    task = _Task(train_stage.fn)
    assert run_stage(cfg, "train", task, 1, "/models/base") == folder
    assert task.calls == []  # it ran on the pool, not here
    [(name, kw)] = calls
    assert name == "stage-train/a100"
    assert kw["parameters"]["base_model"] == "/models/base" and kw["timeout"] == 30
    assert "stage:train" in kw["tags"]
    # landed now: a resumed run reads it without a new flow run
    monkeypatch.setattr("prefect.deployments.run_deployment", _never)
    assert run_stage(cfg, "train", task, 1, "/models/base") == folder


def test_a_failed_stage_run_names_stage_pool_and_state(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path, stage_runner="deployment")
    _dispatch(monkeypatch, Failed(message="worker process exited with code 1"))
    with pytest.raises(StageRunError) as e:
        run_stage(cfg, "curate", _Task(curate_stage.fn), 1, tmp_path / "generate")
    msg = str(e.value)
    assert "stage curate on pool 'cpu'" in msg and "ended Failed" in msg
    assert "exited with code 1" in msg


def test_a_stage_run_past_the_timeout_is_cancelled(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path, stage_runner="deployment", timeout_s=5)
    _dispatch(monkeypatch, Running())
    cancelled = []
    monkeypatch.setattr(stage_runner, "_cancel", cancelled.append)
    with pytest.raises(StageRunError, match=r"still Running after cluster.timeout_s=5 s"):
        run_stage(cfg, "train", _Task(train_stage.fn), 1, "/models/base")
    assert len(cancelled) == 1


def test_a_missing_deployment_says_how_to_register_it(tmp_path, monkeypatch):
    from prefect.exceptions import ObjectNotFound

    def missing(name, **kwargs):
        raise ObjectNotFound(http_exc=Exception(name))

    monkeypatch.setattr("prefect.deployments.run_deployment", missing)
    cfg = _cfg(tmp_path, stage_runner="deployment")
    with pytest.raises(StageRunError, match=r"no deployment stage-eval/gpu-gen.*deploy-stages"):
        run_stage(cfg, "eval", _Task(eval_stage.fn), *_calls(tmp_path)["eval"][0], label="g")


def test_a_completed_run_without_a_manifest_points_at_runs_dir(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path, stage_runner="deployment")
    _dispatch(monkeypatch, Completed())  # the worker wrote somewhere else
    with pytest.raises(StageRunError, match=r"no manifest.*another runs_dir"):
        run_stage(cfg, "train", _Task(train_stage.fn), 1, "/models/base")
