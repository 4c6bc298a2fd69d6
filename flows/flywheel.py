"""The flywheel loop: control flow only.

    suite + base model ─► eval base (the first champion)
    for each generation:
        seeds ─► generate (champion) ─► curate ─► train (challenger) ─► eval ─► register ─► gate

Every stage is a task in `tasks.stages` (a module each) that skips itself when its folder
already has a manifest, so running the same config again resumes at the first unfinished stage. The
champion passed from one generation to the next is whatever the gate stage wrote: a rejected
challenger never becomes the next generation's policy.
"""

import math
import re
from pathlib import Path

from prefect import flow, get_run_logger, tags
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput

from flows.deployments import one_run_at_a_time
from tasks import store
from tasks.config import FlywheelConfig
from tasks.judge_qc import JUDGE_COLUMNS, judge_figures
from tasks.lineage import generation_lineage, generation_markdown
from tasks.plots import JUDGE_SERIES, pass1_interval, trajectory_png
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
from tasks.tracking import flatten, make_tracker

TRACKED_MARK = ".tracked"
LINEAGE_FILE = "lineage.json"


def _tracker(cfg: FlywheelConfig):
    t = cfg.tracking
    return make_tracker(
        t.enabled, cfg.runs_dir, t.experiment or cfg.name, t.registered_model or cfg.name
    )


def generation_row(gen_folder: Path) -> dict:
    """One line of the summary table, read back from a generation's stage manifests."""

    def out(stage: str) -> dict:
        m = store.read_manifest(gen_folder / stage)
        return m.outputs if m else {}

    seeds, cur, tr, ev, gate = (out(s) for s in ("seeds", "curate", "train", "eval", "gate"))
    decision = gate.get("decision", {})
    return {
        "gen": int(gen_folder.name.split("-")[1]),
        "level": seeds.get("difficulty"),
        "seeds": seeds.get("count"),
        "by source": " ".join(f"{k}:{v}" for k, v in sorted(seeds.get("origins", {}).items())),
        "accept": cur.get("accept_rate"),
        "kept": cur.get("accepted"),
        "train rows": tr.get("train_rows"),
        "loss": tr.get("train_loss_last"),
        "challenger pass@1": ev.get("report", {}).get("pass@1"),
        "champion pass@1": decision.get("champion"),
        "gate": decision.get("promote"),
        **(judge_columns(cur["judge"]) if "judge" in cur else {}),
    }


def judge_columns(qc: dict) -> dict[str, float | None]:
    """The judge's summary columns from a curate manifest's QC dict (None where a figure is
    undefined or the manifest predates it)."""
    figures = judge_figures(qc)
    return {label: figures[name].value for label, name in JUDGE_COLUMNS.items()}


@flow(name="generation", flow_run_name="{config.name}/gen-{generation:04d}")
def generation_flow(config: FlywheelConfig, generation: int, champion: dict, suite: Path) -> dict:
    cfg, g = config, generation
    log = get_run_logger()
    tracker = _tracker(cfg)  # continues the flywheel's parent run (its id is on disk)
    tracker.start(cfg.resolved_json(), cfg.flywheel_dir)
    gdir = store.gen_dir(cfg.flywheel_dir, g)
    tracker.start_generation(g, gdir)
    log.info(
        "gen-%04d: champion %s (pass@1 %.3f)", g, champion["model"], champion["report"]["pass@1"]
    )

    try:
        with tags("flywheel", cfg.name, f"gen-{g:04d}"):  # on every task run, for UI filters
            champion_after = _run_generation(cfg, g, champion, suite, tracker, gdir)
    except BaseException:
        tracker.end_generation("FAILED")  # the stages that landed stay; a rerun resumes
        raise
    tracker.end_generation()
    return champion_after


def _run_generation(
    cfg: FlywheelConfig, g: int, champion: dict, suite: Path, tracker, gdir: Path
) -> dict:
    log = get_run_logger()
    policy = _policy(cfg, g, champion)
    seeds = seeds_stage(cfg, g, suite, policy)
    generated = generate_stage(cfg, g, policy, seeds)
    curated = curate_stage(cfg, g, generated)
    trained = train_stage(cfg, g, policy)
    model = str(trained / "model")
    report = eval_stage(cfg, gdir / "eval", model, suite, label=f"gen-{g:04d}")
    version = tracker.register(
        trained / "model",
        {
            "flywheel.generation": str(g),
            "flywheel.parent_model": policy,
            "flywheel.train_mode": cfg.train.stage(g).mode,
            "flywheel.accepted_hash": store.read_manifest(curated).outputs["hash"],
            "flywheel.seeds_hash": store.read_manifest(seeds).outputs["hash"],
        },
    )
    tracker.set_alias("challenger", version)
    challenger = {"model": model, "report": report, "generation": g, "version": version}
    approval = None
    if cfg.gate.approval and store.read_manifest(gdir / "gate") is None:
        proposal = gate_decision(cfg, g, champion, challenger)
        if proposal.promote:
            approval = ask_approval(cfg.name, g, proposal.reason, cfg.gate.approval_timeout)
    gate = gate_stage(cfg, g, champion, challenger, version, approval)
    # Only after the gate's folder has landed does the champion alias move.
    tracker.set_alias("champion", gate["champion"].get("version"))
    log.info("gen-%04d gate: %s", g, gate["decision"]["reason"])

    lineage = generation_lineage(gdir, cfg.train.model_dump(mode="json"))
    store.write_json_atomic(lineage, gdir / LINEAGE_FILE)
    accepted, rejected = _sample_rows(gdir, curated, per_outcome=5)
    create_markdown_artifact(
        generation_markdown(lineage, accepted, rejected),
        key=f"{_artifact_key(cfg.name)}-gen-{g:04d}",
        description=f"{cfg.name} generation {g}: metrics, gate decision, samples",
    )
    plot = _plot_trajectory(cfg.flywheel_dir, g)
    if not (gdir / TRACKED_MARK).exists():
        _track_generation(tracker, g, gdir, seeds, curated)
        tracker.log_parent_artifact(plot, "plots")
        tracker.log_dict(lineage, "lineage.json")
        tracker.set_version_tags(version, _lineage_tags(lineage))
        (gdir / TRACKED_MARK).touch()
    return gate["champion"]


def _policy(cfg: FlywheelConfig, g: int, champion: dict) -> str:
    """The model generation g samples from and trains: the champion, or with
    `train.build_on: previous` generation g-1's trained model (each stage of a staged recipe
    builds on the one before, whatever the gate decided)."""
    if cfg.train.build_on == "champion" or g == 1:
        return champion["model"]
    return str(store.stage_dir(cfg.flywheel_dir, g - 1, "train") / "model")


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
        key=f"{_artifact_key(name)}-gen-{g:04d}-approval",
        description=f"{name} generation {g}: promotion awaiting approval",
    )
    answer = pause_flow_run(wait_for_input=Approval, timeout=timeout, key=f"gen-{g:04d}-approval")
    log.info("gen-%04d: reviewer %s the promotion", g, "approved" if answer.approve else "refused")
    return {"approved": answer.approve, "note": answer.note}


def _plot_trajectory(flywheel_dir: Path, upto: int) -> Path:
    """Redraw `<flywheel>/trajectory.png` from the eval and gate stages of generations 0..upto."""
    points = []
    for g in range(0, upto + 1):
        gdir = store.gen_dir(flywheel_dir, g)
        rep = store.read_manifest(gdir / "eval").outputs["report"]
        pass1, ci = pass1_interval(store.read_parquet(gdir / "eval" / "items.parquet"))
        cur = store.read_manifest(gdir / "curate") if g else None
        gate = store.read_manifest(gdir / "gate") if g else None
        seeds = store.read_manifest(gdir / "seeds") if g else None
        points.append(
            {
                "generation": g,
                "pass1": pass1,
                "pass1_ci": ci,
                "mean_tokens": rep["mean_tokens"],
                "format_rate": rep["format_rate"],
                "accept_rate": cur.outputs["accept_rate"] if cur else None,
                **_judge_points(cur.outputs.get("judge") if cur else None),
                "seed_difficulty": seeds.outputs["difficulty"] if seeds else None,
                "promoted": gate.outputs["decision"]["promote"] if gate else None,
            }
        )
    return trajectory_png(points, Path(flywheel_dir) / "trajectory.png")


def _judge_points(qc: dict | None) -> dict:
    """The judge panel's values and intervals for one generation (None without a judge)."""
    figures = judge_figures(qc)
    out = {}
    for key, _, _ in JUDGE_SERIES:
        est = figures[key.removeprefix("judge_")]
        out[key], out[f"{key}_ci"] = est.value, (est.low, est.high)
    return out


def _artifact_key(name: str) -> str:
    """Prefect artifact keys take lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-") or "flywheel"


def _lineage_tags(lineage: dict) -> dict[str, str]:
    return {
        "lineage.seeds_hash": lineage["seeds"]["hash"],
        "lineage.generator_model": lineage["generator_model"],
        "lineage.candidates_hash": lineage["candidates"]["hash"],
        "lineage.accepted_hash": lineage["accepted"]["hash"],
        "lineage.train_hash": str(lineage["training"]["hash"]),
        "lineage.eval_pass_at_1": f"{lineage['eval']['pass@1']:.4f}",
        "lineage.gate": "promoted" if lineage["gate"]["promote"] else "rejected",
        "lineage.gate_reason": lineage["gate"]["reason"][:500],
    }


def _sample_rows(gdir: Path, curated: Path, per_outcome: int) -> tuple[list[dict], list[dict]]:
    """A few accepted and rejected samples with their verdicts, for tables and reports."""
    verdicts = store.read_parquet(curated / "verdicts.parquet")
    samples = {r["id"]: r for r in store.read_parquet(gdir / "generate" / "samples.parquet")}
    picked = []
    for outcome in ("accept", "reject"):
        rows = [v for v in verdicts if v["outcome"] == outcome][:per_outcome]
        picked.append(
            [
                {
                    "prompt": samples[v["sample_id"]]["prompt"],
                    "completion": samples[v["sample_id"]]["completion"],
                    "answer": samples[v["sample_id"]]["answer"],
                    **v,
                }
                for v in rows
            ]
        )
    return picked[0], picked[1]


def judge_metrics(curate_outputs: dict) -> dict[str, float]:
    """The judge's QC figures of one curate stage as MLflow metrics, `judge.<key>` (nested
    dicts flattened with dots; none without a judge). Text (the rubric version) and undefined
    figures (None, or NaN in older manifests) are left out: a metric is a finite number."""
    qc = flatten(curate_outputs.get("judge", {}))
    return {
        f"judge.{k}": float(v)
        for k, v in qc.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }


def _hygiene_metrics(seeds: dict, cur: dict) -> dict[str, float]:
    """Seeds by source, decontamination and dedup drops, reasoning paths, diversity."""
    m = {f"seeds.origin.{k}": v for k, v in seeds.get("origins", {}).items()}
    m.update({f"seeds.decontaminated.{k}": v for k, v in seeds.get("decontaminated", {}).items()})
    m.update({f"seeds.duplicates.{k}": v for k, v in seeds.get("duplicates", {}).items()})
    if "reasoning_paths" in cur:
        m["curate.reasoning_paths"] = cur["reasoning_paths"]
    for part, figures in cur.get("diversity", {}).items():
        m.update({f"diversity.{part}.{k}": v for k, v in figures.items()})
    return m


def _track_generation(tracker, g: int, gdir: Path, seeds: Path, curated: Path) -> None:
    def outputs(stage: str) -> dict:
        return store.read_manifest(gdir / stage).outputs

    gen, cur, tr, ev, gate = (outputs(s) for s in ("generate", "curate", "train", "eval", "gate"))
    metrics = {
        "seeds.difficulty": outputs("seeds")["difficulty"],
        "generate.tokens_per_s": gen.get("tokens_per_s", 0.0),
        "generate.seconds": gen.get("seconds", 0.0),
        "curate.accept_rate": cur["accept_rate"],
        "curate.accepted": cur["accepted"],
        "curate.seed_solve_rate": cur["seed_solve_rate"],
        **{f"curate.{k}": v for k, v in cur["counts"].items()},
        **_hygiene_metrics(outputs("seeds"), cur),
        "train.rows": tr["train_rows"],
        "train.loss_first": tr.get("train_loss_first"),
        "train.loss_last": tr.get("train_loss_last"),
        "train.seconds": tr.get("seconds"),
        # GRPO's figures (per-reward means, reward std, zero-signal share, completion length,
        # clipped ratio, KL) when this generation's recipe ran GRPO.
        **{f"train.{k}": v for k, v in tr.items() if k.startswith("grpo.")},
        **{f"challenger.{k}": v for k, v in ev["report"].items()},
        **{
            f"challenger.suite.{name}.{k}": v
            for name, rep in ev.get("suites", {}).items()
            for k, v in rep.items()
            if k in ("pass@1", "format_rate", "mean_tokens")
        },
        **{f"champion.{k}": v for k, v in gate["champion"]["report"].items()},
        "gate.promoted": float(gate["decision"]["promote"]),
        "gate.delta": gate["decision"]["delta"],
        "gate.ci_low": gate["decision"].get("ci_low"),
        **{
            f"gate.{k}.regression": v["regression"]
            for k, v in gate["decision"].get("guards", {}).items()
            if k.startswith("collapse.")
        },
        **judge_metrics(cur),
    }
    tracker.log_metrics(metrics, step=g)
    tracker.set_tags(
        {
            "gate.reason": gate["decision"]["reason"],
            "gate.rule": gate["decision"].get("rule", ""),
            "train.mode": tr.get("mode", "sft"),
            "train.stage": tr.get("label") or "",
        }
    )
    tracker.log_dataset(seeds / "seeds.parquet", f"seeds-gen-{g:04d}", "seeds")
    tracker.log_dataset(curated / "accepted.parquet", f"accepted-gen-{g:04d}", "training")
    tracker.log_artifact(gdir / "gate" / "decision.json")
    accepted, rejected = _sample_rows(gdir, curated, per_outcome=50)
    table = accepted + rejected
    tracker.log_table(table, "samples.json")


def last_generation(flywheel_dir: Path) -> int:
    """The newest generation whose gate has landed (0 when none has)."""
    done = [
        int(d.name.split("-")[1])
        for d in Path(flywheel_dir).glob("gen-[0-9]*")
        if store.read_manifest(d / "gate") is not None
    ]
    return max(done, default=0)


@flow(name="flywheel", flow_run_name="{config.name}", log_prints=True)
def flywheel(config: FlywheelConfig, advance: int | None = None) -> list[dict]:
    """Run the flywheel up to `config.generations` (or `advance` generations past the newest
    finished one, as scheduled runs do), resuming from whatever is on disk. Two runs of the same
    flywheel never overlap: the second waits for the first."""
    cfg = config
    log = get_run_logger()
    check_seed_inputs(cfg)  # a bad seed file stops the run before any folder is made
    with one_run_at_a_time(cfg.flywheel_dir, log):
        upto = cfg.generations if advance is None else last_generation(cfg.flywheel_dir) + advance
        with tags("flywheel", cfg.name):
            _run_flywheel(cfg, upto)
    rows = [generation_row(store.gen_dir(cfg.flywheel_dir, g)) for g in range(1, upto + 1)]
    create_table_artifact(
        rows,
        key=f"{_artifact_key(cfg.name)}-generations",
        description=f"{cfg.name}: every generation's metrics and gate decision",
    )
    return rows


def registry_champion(tracker, flywheel_dir: Path, champion: dict) -> dict:
    """The champion a new generation starts from: `models:/<name>@champion`. It is the gate's
    choice unless someone moved the alias (a rollback, a manual promotion), and then the
    registry wins: the generation that version came from supplies its checkpoint and report."""
    reg = tracker.champion()
    if reg is None or reg["version"] == champion.get("version"):
        return champion
    gdir = store.gen_dir(flywheel_dir, reg["generation"])
    get_run_logger().warning(
        "registry alias champion is version %s (gen-%04d), not the gate's %s: following it",
        reg["version"],
        reg["generation"],
        champion.get("version"),
    )
    return {
        "model": str(gdir / "train" / "model"),
        "report": store.read_manifest(gdir / "eval").outputs["report"],
        "generation": reg["generation"],
        "version": reg["version"],
    }


def _run_flywheel(cfg: FlywheelConfig, upto: int) -> None:
    log = get_run_logger()
    tracker = _tracker(cfg)
    tracker.start(cfg.resolved_json(), cfg.flywheel_dir, {"flywheel.name": cfg.name})
    status = "FAILED"
    try:
        suite = suite_stage(cfg)
        base = base_model_stage(cfg, suite)
        base_report = eval_stage(
            cfg, store.gen_dir(cfg.flywheel_dir, 0) / "eval", base, suite, label="gen-0000"
        )
        tracker.log_metrics({f"champion.{k}": v for k, v in base_report.items()}, step=0)
        champion = {"model": base, "report": base_report, "generation": 0, "version": None}
        log.info("base model %s: pass@1 %.3f", base, base_report["pass@1"])
        for g in range(1, upto + 1):
            if store.read_manifest(store.gen_dir(cfg.flywheel_dir, g) / "gate") is None:
                champion = registry_champion(tracker, cfg.flywheel_dir, champion)
            champion = generation_flow(cfg, g, champion, suite)
        status = "FINISHED"
    finally:
        tracker.end(status)
