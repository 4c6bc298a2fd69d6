"""The judge model: where its checkpoint comes from (a local or served one, or the embedded
judge made from scratch) and the worker settings it is run with."""

from __future__ import annotations

from pathlib import Path

from tasks.config import FlywheelConfig
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
    return run_worker("tasks.judge_bootstrap", judge_request(cfg, suite_folder, policy))["path"]


def judge_request(cfg: FlywheelConfig, suite_folder: Path, policy: str | None) -> dict:
    """The bootstrap judge's worker request. Policy samples are drawn with the flywheel's own
    generation settings, so the judge trains on what curation will show it."""
    j, smp, m = cfg.judge, cfg.sampling, cfg.model
    request = dict(
        out_root=str(cfg.runs_dir / "models"),
        rubric=j.rubric,
        max_position=j.max_model_len,
        steps=j.steps,
        batch_size=j.batch_size,
        max_candidate_chars=j.candidate_chars(),
        seed=j.seed,
        domain=cfg.domain,
        exclude=sorted(s.question for s in read_seeds(suite_folder)),
    )
    if not j.policy_samples:
        return request
    if policy is None:
        raise ValueError("judge.policy_samples > 0 needs the base policy's checkpoint")
    return request | dict(
        policy=policy,
        policy_samples=j.policy_samples,
        policy_sampling=dict(
            temperature=smp.temperature,
            top_p=smp.top_p,
            max_tokens=smp.max_tokens,
            prompt_template=m.prompt_template,
            chat_template=m.chat_template,
            system_prompt=m.system_prompt,
            max_model_len=cfg.engine.max_model_len,
            dtype=cfg.engine.dtype,
            hf_batch_size=cfg.engine.hf_batch_size,
        ),
    )


@stage_task(name="judge-model")
def judge_model_stage(cfg: FlywheelConfig, suite_folder: Path) -> str:
    return judge_model_path(cfg, suite_folder)


def judge_settings(cfg: FlywheelConfig, model_path: str, seed: int) -> dict:
    """The judge worker's settings from the config (`tasks.judge_run`), for the curate stage and
    the judge benchmarks alike."""
    j, e = cfg.judge, cfg.engine
    return {
        "model_path": model_path,
        "rubric": j.rubric,
        "backend": j.backend,
        "k": j.k,
        "temperature": j.temperature,
        "max_tokens": j.max_tokens,
        "max_candidate_chars": j.candidate_chars(),
        "max_error_share": j.max_error_share,
        "seed": seed,
        "dtype": e.dtype,
        "gpu_memory_utilization": e.gpu_memory_utilization,
        "max_model_len": j.max_model_len,
        "hf_batch_size": e.hf_batch_size,
        "enforce_eager": e.enforce_eager,
    }
