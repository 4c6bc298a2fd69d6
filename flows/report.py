"""What the flow publishes about each generation, once its gate has landed: the lineage file,
the Prefect markdown report and summary table, the trajectory plot, and the generation's MLflow
metrics, tags, datasets and sample table.

Every figure is a projection of the generation as loaded from its manifests
(`tasks.outputs.load_generation`; tasks/projections.py, tasks/lineage.py, tasks/plots.py hold
the pure projections); this module only writes them where people look. The loop in
flows/flywheel.py calls it and decides nothing here.
"""

import re
from pathlib import Path

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from tasks import store
from tasks.config import FlywheelConfig
from tasks.lineage import LINEAGE_FILE, generation_lineage, generation_markdown, lineage_tags
from tasks.outputs import Generation, load_generation
from tasks.plots import TRAJECTORY_FILE, trajectory_png, trajectory_point
from tasks.projections import generation_metrics, generation_tags

TRACKED_MARK = ".tracked"
"""Left in a generation folder once its MLflow run has its metrics: a resume logs none twice."""


def artifact_key(name: str) -> str:
    """Prefect artifact keys take lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-") or "flywheel"


def report_generation(cfg: FlywheelConfig, tracker, gen: Generation, version: str | None) -> None:
    """Publish one completed generation: its lineage (file, MLflow, tags on the challenger's
    model `version`), its markdown report, the redrawn trajectory, its MLflow run (once)."""
    g, gdir = gen.number, gen.folder
    lineage = generation_lineage(gen, cfg.train.model_dump(mode="json"))
    store.write_json_atomic(lineage, gdir / LINEAGE_FILE)
    accepted, rejected = sample_rows(gdir, per_outcome=5)
    create_markdown_artifact(
        generation_markdown(lineage, accepted, rejected),
        key=f"{artifact_key(cfg.name)}-gen-{g:04d}",
        description=f"{cfg.name} generation {g}: metrics, gate decision, samples",
    )
    plot = plot_trajectory(cfg.flywheel_dir, g)
    if not (gdir / TRACKED_MARK).exists():
        track_generation(tracker, gen)
        tracker.log_parent_artifact(plot, "plots")
        tracker.log_dict(lineage, LINEAGE_FILE)
        tracker.set_version_tags(version, lineage_tags(lineage))
        (gdir / TRACKED_MARK).touch()


def publish_summary(name: str, rows: list[dict]) -> None:
    """The flywheel's summary table (one row per generation) as a Prefect table artifact."""
    create_table_artifact(
        rows,
        key=f"{artifact_key(name)}-generations",
        description=f"{name}: every generation's metrics and gate decision",
    )


def plot_trajectory(flywheel_dir: Path, upto: int) -> Path:
    """Redraw `<flywheel>/trajectory.png` from generations 0..upto."""
    points = []
    for g in range(0, upto + 1):
        gen = load_generation(store.gen_dir(flywheel_dir, g)).require("eval")
        points.append(
            trajectory_point(gen, store.read_parquet(gen.folder / "eval" / "items.parquet"))
        )
    return trajectory_png(points, Path(flywheel_dir) / TRAJECTORY_FILE)


def track_generation(tracker, gen: Generation) -> None:
    """The generation's MLflow run: metrics, tags, its seed and training sets, the gate's
    decision file, and a table of accepted and rejected samples."""
    g, gdir = gen.number, gen.folder
    tracker.log_metrics(generation_metrics(gen), step=g)
    tracker.set_tags(generation_tags(gen))
    seeds = gdir / "seeds" / "seeds.parquet"
    tracker.log_dataset(seeds, f"seeds-gen-{g:04d}", "seeds", gen.seeds.source)
    tracker.log_dataset(gdir / "curate" / "accepted.parquet", f"accepted-gen-{g:04d}", "training")
    tracker.log_artifact(gdir / "gate" / "decision.json")
    accepted, rejected = sample_rows(gdir, per_outcome=50)
    tracker.log_table(accepted + rejected, "samples.json")


def sample_rows(gdir: Path, per_outcome: int) -> tuple[list[dict], list[dict]]:
    """A few accepted and rejected samples with their verdicts, for tables and reports."""
    verdicts = store.read_parquet(gdir / "curate" / "verdicts.parquet")
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
