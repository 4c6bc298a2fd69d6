"""The judge model: where its checkpoint comes from (a local or served one, or the embedded
judge made from scratch). Its worker settings are `tasks.requests.judge_settings`."""

from __future__ import annotations

from pathlib import Path

from tasks.config import FlywheelConfig
from tasks.requests import JudgeBootstrapRequest, judge_bootstrap_request, to_json
from tasks.stages.common import (
    read_seeds,
    stage_task,
)
from tasks.stages.setup import base_model_stage
from tasks.subproc import run_worker


# -- the judge -----------------------------------------------------------------------------------
def judge_model_path(cfg: FlywheelConfig, suite_folder: Path) -> str:
    """The judge checkpoint: a local one, or the tiny judge made from scratch (cached)."""
    j = cfg.judge
    if j.backend == "openai":
        return j.model  # the served model's name; the server is the environment's
    if j.model != "bootstrap":
        path = Path(j.model)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"judge.model: {path} is not a Hugging Face checkpoint folder")
        return str(path)
    # The judge also learns from the base policy's own samples: it is made after the policy.
    policy = base_model_stage.fn(cfg, suite_folder) if j.policy_samples else None
    request = judge_request(cfg, suite_folder, policy)
    return run_worker("tasks.judge_bootstrap", to_json(request))["path"]


def judge_request(
    cfg: FlywheelConfig, suite_folder: Path, policy: str | None
) -> JudgeBootstrapRequest:
    """The bootstrap judge's worker request, never trained on the frozen suite's questions."""
    return judge_bootstrap_request(cfg, [s.question for s in read_seeds(suite_folder)], policy)


@stage_task(name="judge-model")
def judge_model_stage(cfg: FlywheelConfig, suite_folder: Path) -> str:
    return judge_model_path(cfg, suite_folder)
