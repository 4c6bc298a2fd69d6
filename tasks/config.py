"""The flywheel's configuration: one pydantic model, the parameter type of the `flywheel` flow.

Prefect validates it and renders it as the run form in its UI; YAML files in `configs/` load into
it. Every constraint lives on its field, so a bad value fails before any work starts with an
error that names the field and the rule it broke (`load_config` adds the file name).
Only the flows and the stages (`tasks/stages/`) take this object whole. Below them, workers get
a typed request built once from it (`tasks.requests`) and pure functions get the plain values
they need, so no other module under `tasks/` imports this one (`tests/unit/test_import_purity.py`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    Field,
    ValidationError,
    model_validator,
)

from tasks.config_cluster import ClusterConfig
from tasks.config_evaluation import EvalConfig, GateConfig, GuardSuite, JudgeConfig
from tasks.config_export import ExportConfig
from tasks.config_generation import (
    BootstrapConfig,
    CurationConfig,
    EngineConfig,
    HygieneConfig,
    ModelConfig,
    SamplingConfig,
    Section,
    SeedsConfig,
    TrackingConfig,
)
from tasks.config_training import (
    MODEL_REWARDS,
    DistillConfig,
    GKDSection,
    GRPOSection,
    ScheduleEntry,
    ServedTeacher,
    TrainConfig,
    teacher_label,
)

__all__ = [
    "MODEL_REWARDS",
    "BootstrapConfig",
    "ClusterConfig",
    "ConfigError",
    "CurationConfig",
    "DistillConfig",
    "EngineConfig",
    "EvalConfig",
    "ExportConfig",
    "FlywheelConfig",
    "GKDSection",
    "GRPOSection",
    "GateConfig",
    "GuardSuite",
    "HygieneConfig",
    "JudgeConfig",
    "ModelConfig",
    "SamplingConfig",
    "ScheduleEntry",
    "SeedsConfig",
    "ServedTeacher",
    "TrackingConfig",
    "TrainConfig",
    "format_validation_error",
    "load_config",
    "teacher_label",
]


class FlywheelConfig(Section):
    """Everything one flywheel needs. Defaults are the embedded CPU demo."""

    name: str = Field(
        "demo", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Flywheel name (folder)."
    )
    domain: Literal["arith", "math"] = Field("arith", description="Built-in task domain.")
    generations: int = Field(3, gt=0, description="Generations this run goes up to.")
    runs_dir: Path = Field(Path("runs"), description="Where generations and MLflow live.")
    model: ModelConfig = ModelConfig()
    bootstrap: BootstrapConfig = BootstrapConfig()
    engine: EngineConfig = EngineConfig()
    sampling: SamplingConfig = SamplingConfig()
    seeds: SeedsConfig = SeedsConfig()
    curation: CurationConfig = CurationConfig()
    train: TrainConfig = TrainConfig()
    distill: DistillConfig = DistillConfig()
    eval: EvalConfig = EvalConfig()
    gate: GateConfig = GateConfig()
    judge: JudgeConfig = JudgeConfig()
    tracking: TrackingConfig = TrackingConfig()
    hygiene: HygieneConfig = HygieneConfig()
    export: ExportConfig = ExportConfig()
    cluster: ClusterConfig = ClusterConfig()

    @model_validator(mode="after")
    def _rewards_known(self) -> FlywheelConfig:
        from tasks.rewards import REWARDS

        unknown = [r for r in self.curation.rewards if r not in REWARDS]
        if unknown:
            raise ValueError(
                f"curation.rewards: unknown reward(s) {unknown}; known: {sorted(REWARDS)}"
            )
        grpo_sets = {"train.grpo.rewards": self.train.grpo.rewards} | {
            f"train.schedule.{i}.rewards": e.rewards
            for i, e in enumerate(self.train.schedule or [])
            if e.rewards is not None
        }
        modes = {self.train.mode} | {e.mode for e in self.train.schedule or []}
        if "gkd" in modes and self.train.gkd.teacher is None:
            if not self.distill.teachers:
                raise ValueError("train mode gkd needs train.gkd.teacher or distill.teachers")
            if isinstance(self.distill.teachers[0], ServedTeacher):
                raise ValueError(
                    "train.gkd.teacher: GKD needs a local teacher's logits, and "
                    "distill.teachers[0] is a served model; set train.gkd.teacher to a checkpoint"
                )
        served = [t.name for t in self.distill.teachers if isinstance(t, ServedTeacher)]
        if served and self.model.chat_template:
            raise ValueError(
                f"distill.teachers: served teachers {served} take plain-text prompts "
                "(/completions), but model.chat_template is true"
            )
        for where, rewards in grpo_sets.items():
            unknown = [r for r in rewards if r not in REWARDS]
            if unknown or not rewards:
                raise ValueError(
                    f"{where}: unknown or no reward(s) {unknown}; known: {sorted(REWARDS)}"
                )
        return self

    @model_validator(mode="after")
    def _length_buffer_fits(self) -> FlywheelConfig:
        """Curation's `length` reward measures against sampling.max_tokens."""
        c = self.curation
        if "length" in c.rewards and c.length_buffer > self.sampling.max_tokens:
            raise ValueError(
                f"curation.length_buffer ({c.length_buffer}) must not exceed sampling.max_tokens "
                f"({self.sampling.max_tokens}) when `length` is one of curation.rewards"
            )
        return self

    @model_validator(mode="after")
    def _rationalize_has_policy(self) -> FlywheelConfig:
        """Rationalization re-samples the seeds the policy failed: it needs its samples."""
        if self.sampling.rationalize.n and not self.distill.include_policy:
            raise ValueError(
                "sampling.rationalize.n > 0 needs the policy's own samples "
                "(distill.include_policy: true)"
            )
        return self

    @property
    def flywheel_dir(self) -> Path:
        return self.runs_dir / self.name

    def resolved_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True)


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file, field and rule."""


def format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"  {loc}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def load_config(path: str | Path, **overrides: object) -> FlywheelConfig:
    """Read a YAML config, apply dotted overrides (`sampling.n=4`), validate."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    try:
        return FlywheelConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, str(path))) from None
