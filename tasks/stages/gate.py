"""The gate stage: the configured test of challenger vs champion, its guards, and the next
champion written last."""

from __future__ import annotations

from pathlib import Path

from tasks import store
from tasks.config import FlywheelConfig
from tasks.gate import (
    TEST_ARGS,
    GateDecision,
    check_comparable,
    decide_test,
    greedy_check,
    suite_checks,
    suite_greedy_checks,
    with_alarms,
    with_approval,
    with_note,
)
from tasks.hygiene import collapse_checks, diversity
from tasks.outputs import READERS, Champion, EvalOutputs, GateOutputs, gate_outputs
from tasks.stages.common import completed, stage_task
from tasks.stages.evaluate import greedy_items_file


def _collapse_guards(cfg: FlywheelConfig, ref: Path, new: Path) -> dict[str, dict]:
    """Diversity of both models' completions on the frozen suite; a configured drop is an alarm
    that blocks promotion (a challenger that wins by collapsing onto a few outputs)."""
    limits = cfg.hygiene.collapse_max_drop
    if not limits:
        return {}

    def figures(folder: Path) -> dict[str, float]:
        rows = store.read_parquet(folder / "completions.parquet")
        return diversity([r["completion"] for r in rows])

    checks = collapse_checks(figures(ref), figures(new), limits)
    return {f"collapse.{k}": v for k, v in checks.items()}


@stage_task(name="gate", task_run_name="gen-{generation:04d}/gate")
def gate_stage(
    cfg: FlywheelConfig,
    generation: int,
    champion: Champion,
    challenger: Champion,
    approval: dict | None = None,
    decision: GateDecision | None = None,
) -> GateOutputs:
    """Write the decision and the next champion. The champion moves only when this folder
    lands. `decision` is the test's verdict when the flow already ran it (to ask for approval);
    without one the test runs here, so it runs once per generation either way. `approval` is
    a person's answer (`gate.approval`), asked only when the test would promote."""
    folder = store.stage_dir(cfg.flywheel_dir, generation, "gate")
    done = completed(folder)
    if done is not None:
        return gate_outputs(done, str(folder))
    tested = decision if decision is not None else gate_decision(cfg, champion, challenger)
    d = with_approval(tested, approval)
    winner = challenger if d.promote else champion
    with store.write_stage(folder, "gate") as (tmp, out):
        store.write_json(d.to_dict(), tmp / "decision.json")
        out.update(
            decision=d.to_dict(),
            champion=winner.to_dict(),
            challenger_version=challenger.version,
            approval=approval,
        )
    return gate_outputs(completed(folder), str(folder))


def gate_decision(cfg: FlywheelConfig, champion: Champion, challenger: Champion) -> GateDecision:
    """What the configured test says of challenger vs champion (reads their eval items)."""
    ref, generation = champion.generation, challenger.generation
    return eval_decision(
        cfg,
        store.gen_dir(cfg.flywheel_dir, ref) / "eval",
        store.gen_dir(cfg.flywheel_dir, generation) / "eval",
        where=f"(champion gen-{ref:04d}, challenger gen-{generation:04d})",
    )


def eval_decision(cfg: FlywheelConfig, ref: Path, new: Path, where: str = "") -> GateDecision:
    """The gate's test and guards on two eval stage folders: the model evaluated in `new`
    against the one in `ref` (the champion's). Two evals sampled under different settings are
    refused before any test runs."""
    g = cfg.gate
    ref_eval, eval_ = _eval_outputs(ref), _eval_outputs(new)
    check_comparable(ref_eval.params, eval_.params, where=where)
    d = decide_test(_items(ref), _items(new), **g.model_dump(include=set(TEST_ARGS)))
    alarms = _collapse_guards(cfg, ref, new)
    alarms |= suite_checks(
        ref_eval.suites,
        eval_.suites,
        {k: v.max_drop for k, v in cfg.eval.extra_suites.items()},
    )
    rule = {"tolerance": g.greedy_tolerance, "alpha": g.alpha, "n_boot": g.n_boot, "seed": g.seed}
    greedy, note = greedy_check(_greedy_items(ref), _greedy_items(new), **rule)
    guarded = [n for n, s in cfg.eval.extra_suites.items() if s.greedy]
    suites, notes = suite_greedy_checks(
        {n: _greedy_items(ref, n) for n in guarded},
        {n: _greedy_items(new, n) for n in guarded},
        **rule,
    )
    d = with_alarms(d, alarms | greedy | suites)
    for n in (note, *notes):
        d = with_note(d, n)
    return d


def _items(folder: Path) -> list[dict]:
    return store.read_parquet(folder / "items.parquet")


def _eval_outputs(folder: Path) -> EvalOutputs:
    """A landed eval stage's outputs; a folder without its manifest is an error naming it."""
    manifest = store.read_manifest(folder)
    if manifest is None:
        raise FileNotFoundError(f"{folder}: no eval has landed here (no manifest)")
    return READERS["eval"](manifest.outputs, str(folder))


def _greedy_items(folder: Path, suite: str | None = None) -> list[dict] | None:
    """An eval's greedy items on the main suite or an extra one (None for an eval made without
    them)."""
    path = folder / greedy_items_file(suite)
    return store.read_parquet(path) if path.is_file() else None
