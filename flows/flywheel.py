"""The flywheel loop: control flow only.

    suite + base model ─► eval base (the first champion)
    for each generation:
        seeds ─► generate (champion) ─► curate ─► train (challenger) ─► eval ─► register ─► gate
        ─► report (flows/report.py: lineage, plot, MLflow metrics, Prefect artifacts)

Every stage is a task in `tasks.stages` (a module each) that skips itself when its folder
already has a manifest, so running the same config again resumes at the first unfinished stage.
Evaluation and a generation's stages before the gate run where `cluster` places them: inline, or
as flow runs on work pools (`flows.stage_runner`), and leave the same folders either way. The
champion passed from one generation to the next is whatever the gate stage wrote: a rejected
challenger never becomes the next generation's policy. The champion is one record
(`tasks.outputs.Champion`), and what each stage left is read back once per generation
(`tasks.outputs.load_generation`).
"""

from pathlib import Path

from prefect import flow, get_run_logger, tags
from prefect.artifacts import create_markdown_artifact
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput

from flows.report import artifact_key, publish_summary, report_generation
from flows.run_lock import one_run_at_a_time
from flows.stage_runner import check_placement, run_stage
from tasks import store
from tasks.config import FlywheelConfig
from tasks.outputs import Champion, load_flywheel, load_generation
from tasks.projections import generation_row
from tasks.stages import (
    base_model_stage,
    check_seed_inputs,
    curate_stage,
    eval_stage,
    gate_decision,
    gate_stage,
    generate_stage,
    seeds_stage,
    suite_stage,
    train_stage,
)
from tasks.tracking import make_tracker


def _tracker(cfg: FlywheelConfig):
    t = cfg.tracking
    return make_tracker(
        t.enabled, cfg.runs_dir, t.experiment or cfg.name, t.registered_model or cfg.name
    )


@flow(name="generation", flow_run_name="{config.name}/gen-{generation:04d}")
def generation_flow(
    config: FlywheelConfig, generation: int, champion: Champion, suite: Path
) -> Champion:
    cfg, g = config, generation
    log = get_run_logger()
    tracker = _tracker(cfg)  # continues the flywheel's parent run (its id is on disk)
    tracker.start(cfg.resolved_json(), cfg.flywheel_dir)
    gdir = store.gen_dir(cfg.flywheel_dir, g)
    tracker.start_generation(g, gdir)
    log.info("gen-%04d: champion %s (pass@1 %.3f)", g, champion.model, champion.report["pass@1"])

    try:
        with tags("flywheel", cfg.name, f"gen-{g:04d}"):  # on every task run, for UI filters
            champion_after = _run_generation(cfg, g, champion, suite, tracker, gdir)
    except BaseException:
        tracker.end_generation("FAILED")  # the stages that landed stay; a rerun resumes
        raise
    tracker.end_generation()
    return champion_after


def _run_generation(
    cfg: FlywheelConfig, g: int, champion: Champion, suite: Path, tracker, gdir: Path
) -> Champion:
    log = get_run_logger()
    policy = _policy(cfg, g, champion)
    # Each stage runs inline or on its work pool (`cluster`); either way it leaves its folder.
    seeds = run_stage(cfg, "seeds", seeds_stage, g, suite, policy)
    generated = run_stage(cfg, "generate", generate_stage, g, policy, seeds)
    run_stage(cfg, "curate", curate_stage, g, generated)
    start = _start(cfg, policy)
    trained = run_stage(cfg, "train", train_stage, g, start)
    model = str(trained / "model")
    run_stage(cfg, "eval", eval_stage, gdir / "eval", model, suite, label=f"gen-{g:04d}")
    gen = load_generation(gdir)
    version = tracker.register(
        trained / "model",
        {
            "flywheel.generation": str(g),
            "flywheel.parent_model": start,
            "flywheel.train_mode": cfg.train.stage(g).mode,
            "flywheel.accepted_hash": gen.curate.hash,
            "flywheel.seeds_hash": gen.seeds.hash,
        },
    )
    tracker.set_alias("challenger", version)
    challenger = Champion.of(gen, version)
    decision = approval = None
    if cfg.gate.approval and gen.gate is None:
        # The test runs here, once: its verdict decides whether to ask, and the gate writes it.
        decision = gate_decision(cfg, champion, challenger)
        if decision.promote:
            approval = ask_approval(cfg.name, g, decision.reason, cfg.gate.approval_timeout)
    gate = gate_stage(cfg, g, champion, challenger, approval, decision)
    # Only after the gate's folder has landed does the champion alias move.
    tracker.set_alias("champion", gate.champion.version)
    log.info("gen-%04d gate: %s", g, gate.decision.reason)
    report_generation(cfg, tracker, load_generation(gdir), version)
    return gate.champion


def _policy(cfg: FlywheelConfig, g: int, champion: Champion) -> str:
    """The model generation g samples from and trains: the champion, or with
    `train.build_on: previous` generation g-1's trained model (each stage of a staged recipe
    builds on the one before, whatever the gate decided)."""
    if cfg.train.build_on == "champion" or g == 1:
        return champion.model
    return str(store.stage_dir(cfg.flywheel_dir, g - 1, "train") / "model")


def _start(cfg: FlywheelConfig, policy: str) -> str:
    """The weights a generation's training starts from: the policy, or with `train.start_from:
    base` the base model (generation 0's)."""
    if cfg.train.start_from == "policy":
        return policy
    return load_generation(store.gen_dir(cfg.flywheel_dir, 0)).require("eval").eval.model


class Approval(RunInput):
    """A reviewer's answer to a proposed promotion (the form shown in the Prefect UI)."""

    approve: bool
    note: str = ""


def ask_approval(name: str, g: int, reason: str, timeout: int) -> dict:
    """Pause this flow run until a person approves or refuses the promotion in the Prefect UI
    (or `prefect.flow_runs.resume_flow_run(id, run_input={"approve": ..., "note": ...})`)."""
    log = get_run_logger()
    log.warning("gen-%04d: the gate would promote (%s); waiting for approval", g, reason)
    create_markdown_artifact(
        f"# Generation {g}: approve the promotion?\n\n{reason}\n\n"
        "Resume this flow run with `approve: true` to promote, `false` to keep the champion.",
        key=f"{artifact_key(name)}-gen-{g:04d}-approval",
        description=f"{name} generation {g}: promotion awaiting approval",
    )
    answer = pause_flow_run(wait_for_input=Approval, timeout=timeout, key=f"gen-{g:04d}-approval")
    log.info("gen-%04d: reviewer %s the promotion", g, "approved" if answer.approve else "refused")
    return {"approved": answer.approve, "note": answer.note}


def last_generation(flywheel_dir: Path) -> int:
    """The newest generation whose gate has landed (0 when none has)."""
    return max((g.number for g in load_flywheel(flywheel_dir) if g.gate is not None), default=0)


@flow(name="flywheel", flow_run_name="{config.name}", log_prints=True)
def flywheel(config: FlywheelConfig, advance: int | None = None) -> list[dict]:
    """Run the flywheel up to `config.generations` (or `advance` generations past the newest
    finished one, as scheduled runs do), resuming from whatever is on disk. Two runs of the same
    flywheel never overlap: the second waits for the first."""
    cfg = config
    log = get_run_logger()
    check_seed_inputs(cfg)  # a bad seed file stops the run before any folder is made
    check_placement(cfg)  # so does a runs_dir the stages' workers could not share
    with one_run_at_a_time(cfg.flywheel_dir, log):
        upto = cfg.generations if advance is None else last_generation(cfg.flywheel_dir) + advance
        with tags("flywheel", cfg.name):
            _run_flywheel(cfg, upto)
    rows = [
        generation_row(load_generation(store.gen_dir(cfg.flywheel_dir, g)))
        for g in range(1, upto + 1)
    ]
    publish_summary(cfg.name, rows)
    return rows


def registry_champion(tracker, flywheel_dir: Path, champion: Champion) -> Champion:
    """The champion a new generation starts from: `models:/<name>@champion`. It is the gate's
    choice unless someone moved the alias (a rollback, a manual promotion), and then the
    registry wins: the generation that version came from supplies its checkpoint and report."""
    reg = tracker.champion()
    if reg is None or reg["version"] == champion.version:
        return champion
    get_run_logger().warning(
        "registry alias champion is version %s (gen-%04d), not the gate's %s: following it",
        reg["version"],
        reg["generation"],
        champion.version,
    )
    gen = load_generation(store.gen_dir(flywheel_dir, reg["generation"]))
    return Champion.of(gen, reg["version"])


def _run_flywheel(cfg: FlywheelConfig, upto: int) -> None:
    log = get_run_logger()
    tracker = _tracker(cfg)
    tracker.start(cfg.resolved_json(), cfg.flywheel_dir, {"flywheel.name": cfg.name})
    status = "FAILED"
    try:
        suite = suite_stage(cfg)
        base = base_model_stage(cfg, suite)
        base_dir = store.gen_dir(cfg.flywheel_dir, 0)
        run_stage(cfg, "eval", eval_stage, base_dir / "eval", base, suite, label="gen-0000")
        champion = Champion.of(load_generation(base_dir), None, model=base)
        tracker.log_metrics({f"champion.{k}": v for k, v in champion.report.items()}, step=0)
        log.info("base model %s: pass@1 %.3f", base, champion.report["pass@1"])
        for g in range(1, upto + 1):
            gen = load_generation(store.gen_dir(cfg.flywheel_dir, g))
            if gen.gate is None:
                champion = registry_champion(tracker, cfg.flywheel_dir, champion)
            champion = generation_flow(cfg, g, champion, suite)
        status = "FINISHED"
    finally:
        tracker.end(status)
