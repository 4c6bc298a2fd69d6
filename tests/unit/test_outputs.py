"""Stage outputs read back once: manifests written by the stages load into the typed records
every report projects; older manifests load with defaults; the champion keeps its JSON shape;
the gate's test runs once per generation."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from tasks import outputs, store
from tasks.config import FlywheelConfig
from tasks.gate import GateDecision
from tasks.lineage import generation_lineage
from tasks.outputs import (
    Champion,
    Generation,
    ManifestError,
    load_flywheel,
    load_generation,
)
from tasks.plots import trajectory_point
from tasks.projections import generation_metrics, generation_row, generation_tags
from tasks.records import Sample, to_rows
from tasks.stages import curate_stage, seeds_stage, suite_stage
from tasks.stages import gate as gate_module
from tasks.stages.generate import _pooled_stats

ROOT = Path(__file__).resolve().parents[2]
PARAMS = {"n": 4, "temperature": 1.0, "top_p": 1.0, "max_tokens": 96, "seed": 1234}
OK = "<think>1+2=3</think><answer>3</answer>"


def _cfg(tmp_path) -> FlywheelConfig:
    return FlywheelConfig(
        name="fw",
        runs_dir=tmp_path,
        seeds={"count": 24},
        eval={"suite_size": 16, "k": 4},
        hygiene={"collapse_max_drop": {}},  # no completions in the hand-made evals
    )


def _eval(cfg: FlywheelConfig, generation: int, correct: list[int]) -> list[dict]:
    """An eval folder as the eval stage leaves it (its worker needs a model: stood in for)."""
    items = [
        {
            "item_id": f"q{i:03d}",
            "difficulty": 1,
            "n": 4,
            "correct": c,
            "formatted": 4,
            "truncated": 0,
            "majority_correct": 2 * c > 4,
            "mean_tokens": 30.0,
        }
        for i, c in enumerate(correct)
    ]
    folder = store.stage_dir(cfg.flywheel_dir, generation, "eval")
    with store.write_stage(folder, "eval") as (tmp, out):
        store.write_parquet(items, tmp / "items.parquet")
        rep = {"pass@1": float(np.mean(correct)) / 4, "mean_tokens": 30.0, "format_rate": 1.0}
        out.update(
            report=rep, suites={}, model=f"m{generation}", params=PARAMS, generate={}, seconds=1.0
        )
    return items


def _generation_on_disk(cfg: FlywheelConfig) -> tuple[Champion, Champion]:
    """Generation 1 written by the stages that run without a model (suite, seeds, curate, gate);
    generate, train and eval folders written with the keys their stages write."""
    suite = suite_stage.fn(cfg)
    seeds_stage.fn(cfg, 1, suite)
    gen = store.stage_dir(cfg.flywheel_dir, 1, "generate")
    samples = [
        Sample(f"id{i}", f"s{i}", "Q: 1+2\n", OK if i % 2 else "3", "3", 1, 0, "m0", 20, "stop")
        for i in range(8)
    ]
    run = {"model": "m0", "template": "plain", "rows": 8, "seconds": 2.0, "tokens": 160}
    run |= {"engine_load_s": 1.0, "generate_s": 1.0, "wall_s": 3.0}
    with store.write_stage(gen, "generate") as (tmp, out):
        store.write_parquet(to_rows(samples), tmp / "samples.parquet")
        out.update(
            _pooled_stats([run]), samples=8, params=PARAMS, model="m0", sources=[run], hash="g"
        )
    curate_stage.fn(cfg, 1, gen)
    with store.write_stage(store.stage_dir(cfg.flywheel_dir, 1, "train"), "train") as (_, out):
        out.update(mode="sft", label=None, steps=3, train_loss_first=2.0, train_loss_last=1.0)
        out.update(seconds=4.0, train_rows=4, hash="t", base_model="m0", wall_s=5.0)
    rng = np.random.default_rng(0)
    champ = rng.binomial(4, 0.2, size=16)
    _eval(cfg, 0, list(champ))
    _eval(cfg, 1, list(np.minimum(champ + 2, 4)))
    champion = Champion.of(load_generation(store.gen_dir(cfg.flywheel_dir, 0)), None, "m0")
    challenger = Champion.of(load_generation(store.gen_dir(cfg.flywheel_dir, 1)), "1")
    return champion, challenger


def test_stage_manifests_load_into_the_records_every_report_reads(tmp_path):
    cfg = _cfg(tmp_path)
    champion, challenger = _generation_on_disk(cfg)
    written = gate_module.gate_stage.fn(cfg, 1, champion, challenger)

    gen = load_generation(store.gen_dir(cfg.flywheel_dir, 1))
    assert gen.landed == outputs.STAGES and gen.number == 1
    assert gen.gate == written and isinstance(gen.gate.decision, GateDecision)
    assert gen.gate.champion == (challenger if gen.gate.decision.promote else champion)
    assert gen.seeds.count == 24 and gen.seeds.origins == {"generator": 24}
    assert gen.curate.counts["accept"] == 4 and gen.curate.judge is None
    assert gen.generate.tokens_per_s == 160.0 and gen.generate.sources[0]["rows"] == 8

    row = generation_row(gen)
    assert None not in row.values() and row["gate"] == gen.gate.decision.promote
    metrics = generation_metrics(gen)
    assert metrics["curate.accepted"] == gen.curate.accepted
    assert metrics["champion.pass@1"] == gen.gate.champion.report["pass@1"]  # after the gate
    assert generation_tags(gen)["train.mode"] == "sft"
    lineage = generation_lineage(gen, {})
    assert lineage["champion_after"]["version"] == gen.gate.champion.version
    assert lineage["gate"] == gen.gate.decision.to_dict()
    items = store.read_parquet(gen.folder / "eval" / "items.parquet")
    assert trajectory_point(gen, items)["seed_difficulty"] == gen.seeds.difficulty
    base = load_flywheel(cfg.flywheel_dir)[0]
    assert (base.number, base.landed) == (0, ("eval",))
    assert trajectory_point(base, items)["promoted"] is None


def _written_keys(module: Path) -> set[str]:
    """The keys a stage module puts into its manifest's outputs: `out.update(key=...)`,
    `out["key"] = ...` and `out.update({"key": ...})`."""
    keys: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "update":
            if getattr(node.func.value, "id", "") == "out":
                keys |= {k.arg for k in node.keywords if k.arg}
        if isinstance(node, ast.Subscript) and getattr(node.value, "id", "") == "out":
            if isinstance(node.slice, ast.Constant):
                keys.add(node.slice.value)
    return keys


@pytest.mark.parametrize(
    "stage,module",
    [
        ("seeds", "seeds"),
        ("generate", "generate"),
        ("curate", "curate"),
        ("train", "train"),
        ("eval", "evaluate"),
        ("gate", "gate"),
    ],
)
def test_every_key_a_record_requires_is_one_its_stage_writes(stage, module):
    """A stage that stops writing a key a reader needs fails here, not in a report later."""
    record = {f.name: f for f in dataclasses.fields(Generation)}[stage].type
    cls = getattr(outputs, record.split(" | ")[0])
    required = {
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    assert required <= _written_keys(ROOT / "tasks" / "stages" / f"{module}.py")


def test_older_manifests_load_with_defaults_and_a_missing_key_is_named(tmp_path):
    gdir = tmp_path / "gen-0002"
    # Seeds and eval as the first versions of their stages wrote them.
    with store.write_stage(gdir / "seeds", "seeds") as (_, out):
        out.update(count=4, difficulty=1.5, origins={"generator": 4}, hash="s")
    with store.write_stage(gdir / "eval", "eval") as (_, out):
        out.update(report={"pass@1": 0.2}, model="m", params=PARAMS, generate={}, seconds=1.0)
    gen = load_generation(gdir)
    assert gen.landed == ("seeds", "eval")
    assert gen.seeds.decontaminated == {} and gen.seeds.source is None and gen.eval.suites == {}
    with pytest.raises(FileNotFoundError, match="gen-0002/generate: stage has not completed"):
        generation_lineage(gen, {})
    with store.write_stage(gdir / "curate", "curate") as (_, out):
        out.update(counts={}, accepted=0, accept_rate=0.0, seed_solve_rate=0.0)
    with pytest.raises(ManifestError, match=r"gen-0002/curate: outputs have no 'hash'"):
        load_generation(gdir)


def test_champion_keeps_the_json_shape_old_gate_manifests_hold():
    stored = {"model": "/m", "report": {"pass@1": 0.25}, "generation": 2, "version": "3"}
    champion = Champion.from_dict(stored)
    assert champion == Champion("/m", {"pass@1": 0.25}, 2, "3")
    assert champion.to_dict() == stored


# -- the gate's test runs once per generation ---------------------------------------------------
def _counted(monkeypatch) -> list:
    calls = []
    real = gate_module.gate_decision

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(gate_module, "gate_decision", counting)
    return calls


def test_gate_stage_runs_the_test_once_when_no_decision_is_given(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path)
    champion, challenger = _generation_on_disk(cfg)
    calls = _counted(monkeypatch)
    gate_module.gate_stage.fn(cfg, 1, champion, challenger)
    gate_module.gate_stage.fn(cfg, 1, champion, challenger)  # landed: read back, not retested
    assert len(calls) == 1


def test_gate_stage_writes_the_decision_it_is_given(tmp_path, monkeypatch):
    """The flow tests once to ask for approval; the gate writes that verdict, tested no more."""
    cfg = _cfg(tmp_path)
    champion, challenger = _generation_on_disk(cfg)
    calls = _counted(monkeypatch)
    decided = dataclasses.replace(
        gate_module.gate_decision(cfg, champion, challenger), reason="decided in the flow"
    )
    assert decided.promote
    refused = {"approved": False, "note": "too long"}
    gate = gate_module.gate_stage.fn(cfg, 1, champion, challenger, refused, decided)
    assert len(calls) == 1  # the flow's call only
    assert gate.decision.rule == "approval" and "decided in the flow" in gate.decision.reason
    assert gate.champion == champion and gate.approval == refused
    assert gate.challenger_version == "1"
