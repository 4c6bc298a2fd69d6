"""What the stages leave behind, as typed records read back by one loader.

Every stage writes its small results into its manifest's `outputs` (a JSON dict, so runs on
disk stay readable by any version). `load_generation` reads a generation folder's manifests
once into a `Generation`: which stages landed and each one's typed outputs. Every report is a
projection of that object (the summary row, the trajectory plot, the MLflow metrics, the
lineage record, `flywheel compare` and `flywheel status`), so a key is named in one place.

A field without a default is one every version of its stage has written; a missing one is a
corrupt manifest and names the key. Fields with defaults arrived later (greedy results, the
judge, extra suites, seed hygiene, seed source): a manifest written before them loads with the
default.
Keys a stage writes that no reader uses are left in the manifest and not copied here.

Pure: the manifests are read through `tasks.store` inside `load_generation`, so importing this
module loads no Parquet, Prefect, MLflow or torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from tasks.gate import GateDecision

STAGES = ("seeds", "generate", "curate", "train", "eval", "gate")
"""A generation's stages in the order they run."""


class ManifestError(ValueError):
    """A completed stage's outputs lack a key every version of that stage writes."""


def _pick(cls: type, out: dict, where: str, **converted: Any):
    """`cls` from a manifest's `outputs`: each field from the key of its name, `converted`
    where the stored value needs building, the field's default where an older stage wrote none."""
    kw: dict[str, Any] = {}
    for f in fields(cls):
        if f.name in converted:
            kw[f.name] = converted[f.name]
        elif f.name in out:
            kw[f.name] = out[f.name]
        elif f.default is MISSING and f.default_factory is MISSING:
            raise ManifestError(f"{where}: outputs have no '{f.name}'")
    return cls(**kw)


@dataclass(frozen=True)
class SeedsOutputs:
    count: int
    difficulty: float
    hash: str
    origins: dict[str, int] = field(default_factory=dict)
    decontaminated: dict[str, int] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    # What generation 1 read (`kind` file or dataset, path, hashes, split, column mapping; see
    # `tasks.seed_dataset`); None for generated or evolved seeds and for runs before the key.
    source: dict[str, Any] | None = None


@dataclass(frozen=True)
class GenerateOutputs:
    model: str
    params: dict[str, Any]
    samples: int
    hash: str
    # One record per (model, template) run: the policy, then each teacher.
    sources: tuple[dict, ...] = ()
    tokens_per_s: float = 0.0
    seconds: float = 0.0
    # STaR's rationalization (`sampling.rationalize`): failed seeds sampled again with the
    # answer as a hint (`seeds`), hinted samples (`samples`), how many verified; {} when off.
    rationalize: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class CurateOutputs:
    counts: dict[str, int]
    accepted: int
    accept_rate: float
    seed_solve_rate: float
    hash: str
    reasoning_paths: float | None = None
    diversity: dict[str, dict[str, float]] = field(default_factory=dict)
    judge: dict[str, Any] | None = None  # the judge's QC dict (None: curation ran no judge)


@dataclass(frozen=True)
class TrainOutputs:
    base_model: str
    train_rows: int
    hash: str | None = None
    mode: str = "sft"
    label: str | None = None
    steps: int | None = None
    train_loss_first: float | None = None
    train_loss_last: float | None = None
    seconds: float | None = None
    grpo: dict[str, float] = field(default_factory=dict)  # `grpo.*` figures of a GRPO recipe


@dataclass(frozen=True)
class EvalOutputs:
    report: dict[str, float]
    model: str
    params: dict[str, Any]
    suites: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class Champion:
    """The model a generation samples from and must beat, and how it scored on the suite."""

    model: str
    report: dict[str, float]
    generation: int
    version: str | None = None  # its registered model version (None: the base model)

    @classmethod
    def of(cls, gen: Generation, version: str | None, model: str | None = None) -> Champion:
        """Generation `gen`'s model scored by its eval: its trained checkpoint, or `model`
        (generation 0's base model, which has no train folder)."""
        report = gen.require("eval").eval.report
        return cls(model or str(gen.folder / "train" / "model"), report, gen.number, version)

    def to_dict(self) -> dict:
        """The JSON shape the gate manifest has always stored."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "champion") -> Champion:
        return _pick(cls, d, where)


@dataclass(frozen=True)
class GateOutputs:
    decision: GateDecision
    champion: Champion  # the next generation's champion: the winner
    challenger_version: str | None
    approval: dict[str, Any] | None = None  # a reviewer's answer (`gate.approval`)


def _seeds(out: dict, where: str) -> SeedsOutputs:
    return _pick(SeedsOutputs, out, where)


def _generate(out: dict, where: str) -> GenerateOutputs:
    return _pick(GenerateOutputs, out, where, sources=tuple(out.get("sources", ())))


def _curate(out: dict, where: str) -> CurateOutputs:
    return _pick(CurateOutputs, out, where)


def _train(out: dict, where: str) -> TrainOutputs:
    grpo = {k: v for k, v in out.items() if k.startswith("grpo.")}
    return _pick(TrainOutputs, out, where, grpo=grpo)


def _eval(out: dict, where: str) -> EvalOutputs:
    return _pick(EvalOutputs, out, where)


def decision_from_dict(d: dict, where: str = "decision") -> GateDecision:
    """A gate decision as stored (JSON lists back to tuples)."""
    tuples = {k: tuple(d[k]) for k in ("tripwires", "notes") if k in d}
    return _pick(GateDecision, d, where, **tuples)


def gate_outputs(out: dict, where: str = "gate") -> GateOutputs:
    """The gate stage's outputs as written by `tasks.stages.gate.gate_stage`."""
    for key in ("decision", "champion"):
        if key not in out:
            raise ManifestError(f"{where}: outputs have no '{key}'")
    return _pick(
        GateOutputs,
        out,
        where,
        decision=decision_from_dict(out["decision"], f"{where}: decision"),
        champion=Champion.from_dict(out["champion"], f"{where}: champion"),
    )


READERS = {
    "seeds": _seeds,
    "generate": _generate,
    "curate": _curate,
    "train": _train,
    "eval": _eval,
    "gate": gate_outputs,
}
"""Stage name -> the reader of its manifest outputs."""


@dataclass(frozen=True)
class Generation:
    """One generation folder: each stage's outputs, None where the stage has not landed.
    Generation 0 has only an eval (the base model's)."""

    number: int
    folder: Path
    seeds: SeedsOutputs | None = None
    generate: GenerateOutputs | None = None
    curate: CurateOutputs | None = None
    train: TrainOutputs | None = None
    eval: EvalOutputs | None = None
    gate: GateOutputs | None = None

    @property
    def landed(self) -> tuple[str, ...]:
        """The stages whose folders have landed, in run order."""
        return tuple(s for s in STAGES if getattr(self, s) is not None)

    def require(self, *stages: str) -> Generation:
        """This generation, or an error naming the first of `stages` that has not landed."""
        for s in stages:
            if getattr(self, s) is None:
                raise FileNotFoundError(f"{self.folder / s}: stage has not completed")
        return self


def generation_number(folder: Path) -> int:
    """`gen-0003` -> 3."""
    return int(Path(folder).name.split("-")[1])


def load_generation(gen_folder: Path) -> Generation:
    """Read every landed stage's manifest of one generation folder into a `Generation`."""
    from tasks.store import read_manifest  # Parquet I/O: only when folders are read

    folder = Path(gen_folder)
    landed = {}
    for stage, read in READERS.items():
        man = read_manifest(folder / stage)
        if man is not None:
            landed[stage] = read(man.outputs, str(folder / stage))
    return Generation(generation_number(folder), folder, **landed)


def load_flywheel(flywheel_dir: Path) -> list[Generation]:
    """Every generation folder of a flywheel, generation 0 (the base model) first."""
    folders = Path(flywheel_dir).glob("gen-[0-9]*")
    return [load_generation(d) for d in sorted(folders, key=generation_number) if d.is_dir()]
