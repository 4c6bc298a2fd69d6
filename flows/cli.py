"""`flywheel`: the command line.

flywheel run configs/demo.yaml [--generations N] [--set sampling.n=4]
flywheel run configs/demo.yaml --more 1          # one generation past the newest finished one
flywheel serve configs/demo.yaml --cron "0 3 * * *"   # or --interval SECONDS
flywheel deploy configs/demo.yaml --pool gpu --cron "0 3 * * *"
flywheel deploy-stages configs/cluster.yaml    # the stages' deployments on their work pools
flywheel bootstrap configs/demo.yaml
flywheel status configs/demo.yaml
flywheel compare configs/demo.yaml [--metric pass@1 --metric gate]
flywheel lineage configs/demo.yaml 3|gen-3
flywheel export configs/demo.yaml OUT [--generation 2] [--all]
    [--format messages|prompt-completion|preference]
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console
from rich.table import Table

from flows.stack import stack as stack_command
from tasks.config import ConfigError, FlywheelConfig, load_config
from tasks.config_export import ExportFormat
from tasks.seeds import SeedFileError

ROOT = Path(__file__).resolve().parents[1]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Run the R1 post-training loop as a gated data flywheel.",
)
# Tables are wide; keep them readable when the output is a file or a pipe too.
console = Console(width=None if Console().is_terminal else 160)
# Errors are never wrapped: a path or a field name split across lines cannot be copied or grepped.
err = Console(stderr=True, soft_wrap=True)

ConfigArg = Annotated[Path, typer.Argument(help="YAML config (see configs/).")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a field, dotted: --set sampling.n=4 (repeatable)."),
]


def _load(path: Path, sets: list[str] | None, **extra: object) -> FlywheelConfig:
    overrides: dict[str, object] = dict(extra)
    for item in sets or []:
        key, sep, value = item.partition("=")
        if not sep:
            err.print(f"[red]--set {item!r}: expected key=value[/red]")
            raise typer.Exit(2)
        overrides[key.strip()] = yaml.safe_load(value)
    try:
        return load_config(path, **overrides)
    except ConfigError as e:
        err.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from None


def _fmt(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "promoted" if v else "kept champion"
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() else f"{v:.3f}"
    return str(v)


def print_table(rows: list[dict], title: str) -> None:
    if not rows:
        console.print(f"{title}: no generations yet")
        return
    table = Table(title=title)
    columns = list(dict.fromkeys(k for r in rows for k in r))  # rows may differ (judge or not)
    for key in columns:
        table.add_column(key, justify="left" if key in ("gate", "status") else "right")
    for r in rows:
        table.add_row(*(_fmt(r.get(k)) for k in columns))
    console.print(table)


@app.command()
def run(
    config: ConfigArg,
    generations: Annotated[int | None, typer.Option(help="Run up to this generation.")] = None,
    more: Annotated[
        int | None, typer.Option(min=1, help="Run this many generations past the newest one.")
    ] = None,
    set_: SetOpt = None,
) -> None:
    """Run (or resume) the flywheel up to its last generation."""
    extra = {"generations": generations} if generations else {}
    cfg = _load(config, set_, **extra)
    from flows.flywheel import flywheel
    from flows.local_api import ensure_api
    from tasks.stages import check_seed_inputs
    from tasks.subproc import WorkerError

    try:
        check_seed_inputs(cfg)  # a bad seed file is named before the API is even started
        ensure_api()  # a busy machine's slow local API start is not a failed run
        rows = flywheel(cfg, advance=more)
    except (SeedFileError, FileNotFoundError, WorkerError, RuntimeError) as e:
        err.print(f"[red]flywheel {cfg.name} stopped: {e}[/red]")
        err.print("Completed stages are kept; fix the cause and run the same command to resume.")
        raise typer.Exit(1) from None
    print_table(rows, f"flywheel {cfg.name}")
    from tasks.plots import TRAJECTORY_FILE

    plot = cfg.flywheel_dir / TRAJECTORY_FILE
    if plot.is_file():
        console.print(f"trajectory: {plot}")
    for line in ui_commands(cfg, experiment_id(cfg)):
        console.print(line, highlight=False, markup=False)


def experiment_id(cfg: FlywheelConfig) -> str | None:
    """The id of the flywheel's MLflow experiment (None: tracking off, or none made yet)."""
    from tasks.tracking import default_tracking_uri

    if not cfg.tracking.enabled:
        return None
    from mlflow import MlflowClient

    exp = MlflowClient(default_tracking_uri(cfg.runs_dir)).get_experiment_by_name(
        cfg.tracking.experiment or cfg.name
    )
    return None if exp is None else exp.experiment_id


def mlflow_runs_link(ui: str, experiment: str) -> str:
    """An experiment's runs table in MLflow's UI. MLflow 3.17's UI shows an experiment in the
    view of its workflow switch (the `workflowType` query parameter, else the browser's last
    choice, else GenAI, which opens on the traces overview), not by the experiment's
    `mlflow.experimentKind` tag: the link names the model-training view."""
    return f"{ui.rstrip('/')}/#/experiments/{experiment}/runs?workflowType=machine_learning"


def ui_commands(cfg: FlywheelConfig, experiment: str | None = None) -> list[str]:
    """How to open the Prefect and MLflow UIs on this flywheel's results: `make ui` where it
    serves exactly them (the repository's runs/ folder, local Prefect and MLflow stores), else
    the commands that do, or the servers' addresses when the run went to remote ones; with the
    flywheel's MLflow `experiment` id, a link to its runs."""
    from tasks.tracking import default_tracking_uri

    bin_dir = Path(sys.executable).parent
    if bin_dir.is_relative_to(Path.cwd()):
        bin_dir = bin_dir.relative_to(Path.cwd())
    prefect_api = os.environ.get("PREFECT_API_URL")
    mlflow_uri = default_tracking_uri(cfg.runs_dir) if cfg.tracking.enabled else None
    local = not prefect_api and not os.environ.get("MLFLOW_TRACKING_URI")
    ui = mlflow_uri if mlflow_uri and mlflow_uri.startswith("http") else "http://127.0.0.1:5000"
    runs = [f"MLflow runs: {mlflow_runs_link(ui, experiment)}"] if mlflow_uri and experiment else []
    if local and cfg.runs_dir.resolve() == ROOT / "runs":
        mlflow_ui = ", MLflow http://127.0.0.1:5000" if mlflow_uri else ""
        return [f"UIs: make ui  (Prefect http://127.0.0.1:4200{mlflow_ui})", *runs]
    lines = [
        f"Prefect UI: {prefect_api.removesuffix('/api')}"
        if prefect_api
        else f"Prefect UI: {bin_dir / 'prefect'} server start  (http://127.0.0.1:4200)"
    ]
    if mlflow_uri and mlflow_uri.startswith("http"):
        lines.append(f"MLflow UI: {mlflow_uri}")
    elif mlflow_uri:
        artifacts = cfg.runs_dir.resolve() / "mlartifacts"
        lines.append(
            f"MLflow UI: {bin_dir / 'mlflow'} ui --backend-store-uri {mlflow_uri} "
            f"--default-artifact-root {artifacts} --port 5000  (http://127.0.0.1:5000)"
        )
    return lines + runs


CronOpt = Annotated[str | None, typer.Option(help='Cron schedule, e.g. "0 3 * * *".')]
IntervalOpt = Annotated[float | None, typer.Option(min=1, help="Seconds between scheduled runs.")]


@app.command()
def serve(
    config: ConfigArg, cron: CronOpt = None, interval: IntervalOpt = None, set_: SetOpt = None
) -> None:
    """Schedule the flywheel and run the schedule on this machine (Ctrl-C stops).

    Each scheduled run advances the flywheel one generation from its champion; a run that
    comes due while another is active waits for it."""
    cfg = _load(config, set_)
    from flows import deployments
    from flows.local_api import ApiUnavailable, ensure_api

    try:
        ensure_api()
        deployments.serve(cfg, cron=cron, interval=interval)
    except (ValueError, ApiUnavailable) as e:
        err.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from None


@app.command()
def deploy(
    config: ConfigArg,
    pool: Annotated[str, typer.Option(help="Prefect work pool (type process).")] = "flywheel",
    cron: CronOpt = None,
    interval: IntervalOpt = None,
    set_: SetOpt = None,
) -> None:
    """Register a scheduled deployment with the Prefect server (PREFECT_API_URL) for a work
    pool's workers: `prefect worker start --pool POOL` on the machine that should run it."""
    cfg = _load(config, set_)
    from flows import deployments

    try:
        deployment_id = deployments.deploy(cfg, pool, cron=cron, interval=interval)
    except ValueError as e:
        err.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from None
    console.print(f"deployment flywheel/{cfg.name} ({deployment_id}) on work pool {pool!r}")
    console.print(f"start a worker: prefect worker start --pool {pool}")


@app.command("deploy-stages")
def deploy_stages(config: ConfigArg, set_: SetOpt = None) -> None:
    """Register each stage's deployment on the work pool `cluster.pools` names for it (with
    Prefect server PREFECT_API_URL), for runs with `cluster.stage_runner: deployment`."""
    cfg = _load(config, set_)
    from flows import deployments
    from flows.stage_runner import stage_pools

    for name, deployment_id in deployments.deploy_stages(cfg).items():
        console.print(f"deployment {name} ({deployment_id})", highlight=False)
    for pool in sorted(set(stage_pools(cfg).values())):
        console.print(f"start a worker: prefect worker start --pool {pool} --type process")


@app.command()
def bootstrap(config: ConfigArg = Path("configs/demo.yaml"), set_: SetOpt = None) -> None:
    """Freeze the eval suite and make (or find) the base model and the judge, then stop."""
    cfg = _load(config, set_)
    from flows.local_api import ApiUnavailable, ensure_api
    from tasks.stages import base_model_stage, judge_model_stage, suite_stage

    try:
        ensure_api()  # the stages are Prefect tasks: they report to the API
    except ApiUnavailable as e:
        err.print(f"[red]{e}[/red]")
        raise typer.Exit(1) from None
    suite = suite_stage(cfg)
    path = base_model_stage(cfg, suite)
    console.print(f"base model: {path}")
    console.print(f"judge model: {judge_model_stage(cfg, suite)}")


@app.command()
def status(config: ConfigArg = Path("configs/demo.yaml"), set_: SetOpt = None) -> None:
    """A table of the flywheel's generations, read from MLflow."""
    cfg = _load(config, set_)
    from tasks.tracking import default_tracking_uri

    if not cfg.tracking.enabled:
        from tasks.outputs import load_flywheel
        from tasks.projections import generation_row

        gens = load_flywheel(cfg.flywheel_dir)
        print_table([generation_row(g) for g in gens if g.number > 0], cfg.name)
        return
    import mlflow

    uri = default_tracking_uri(cfg.runs_dir)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        console.print(f"no runs yet for {cfg.name} ({uri})")
        return
    mlflow.set_tracking_uri(uri)
    exp = mlflow.get_experiment_by_name(cfg.tracking.experiment or cfg.name)
    if exp is None:
        console.print(f"no MLflow experiment for {cfg.name} at {uri}")
        return
    runs = mlflow.search_runs(
        [exp.experiment_id], "tags.`flywheel.role` = 'generation'", output_format="list"
    )
    from tasks.judge_qc import JUDGE_COLUMNS

    rows = []
    for r in sorted(runs, key=lambda r: int(r.data.tags.get("flywheel.generation", 0))):
        m = r.data.metrics
        rows.append(
            {
                "gen": int(r.data.tags["flywheel.generation"]),
                "status": r.info.status,
                "level": m.get("seeds.difficulty"),
                "by source": " ".join(
                    f"{k.removeprefix('seeds.origin.')}:{int(v)}"
                    for k, v in sorted(m.items())
                    if k.startswith("seeds.origin.")
                ),
                "accept": m.get("curate.accept_rate"),
                "kept": m.get("curate.accepted"),
                **{label: m.get(f"judge.{name}") for label, name in JUDGE_COLUMNS.items()},
                "challenger pass@1": m.get("challenger.pass_at_1"),
                "champion pass@1": m.get("champion.pass_at_1"),
                "gate": None if "gate.promoted" not in m else bool(m["gate.promoted"]),
                "run": r.info.run_id[:8],
            }
        )
    print_table(rows, f"flywheel {cfg.name} ({uri})")


@app.command()
def compare(
    config: ConfigArg = Path("configs/demo.yaml"),
    metric: Annotated[
        list[str] | None,
        typer.Option(help="Only metrics whose name starts with this (repeatable)."),
    ] = None,
    set_: SetOpt = None,
) -> None:
    """The generations side by side: one column per generation, one row per metric."""
    from tasks.lineage import comparison
    from tasks.outputs import load_flywheel

    cfg = _load(config, set_)
    columns, rows = comparison(load_flywheel(cfg.flywheel_dir))
    if metric:
        rows = [r for r in rows if any(r[0].startswith(m) for m in metric)]
    if not columns or not rows:
        console.print(f"{cfg.name}: nothing to compare yet in {cfg.flywheel_dir}")
        return
    table = Table(title=f"flywheel {cfg.name}: generations side by side (gen-0000 = base)")
    table.add_column("metric")
    for c in columns:
        table.add_column(c, justify="right")
    for name, values in rows:
        table.add_row(name, *(_fmt(v) if not isinstance(v, str) else v for v in values))
    console.print(table)


@app.command()
def lineage(
    config: ConfigArg,
    version: Annotated[str, typer.Argument(help="Registered model version, or gen-N.")],
    set_: SetOpt = None,
) -> None:
    """Print what produced a challenger: seeds → samples → accepted → training → eval → gate."""
    from tasks.lineage import LINEAGE_FILE

    cfg = _load(config, set_)
    records = [
        json.loads(p.read_text()) for p in sorted(cfg.flywheel_dir.glob(f"gen-*/{LINEAGE_FILE}"))
    ]
    if version.startswith("gen-"):
        found = [r for r in records if r["generation"] == int(version.removeprefix("gen-"))]
    else:
        found = [r for r in records if r["challenger"]["version"] == version]
    if not found:
        known = [r["challenger"]["version"] or f"gen-{r['generation']}" for r in records]
        err.print(f"[red]no lineage for {version!r} in {cfg.flywheel_dir}; known: {known}[/red]")
        raise typer.Exit(1)
    console.print_json(json.dumps(found[0]))


@app.command()
def export(
    config: ConfigArg,
    out: Annotated[Path, typer.Argument(help="New folder: the dataset, train.jsonl, README.md.")],
    generation: Annotated[
        int | None,
        typer.Option(min=1, help="Generation (default: the latest whose curation completed)."),
    ] = None,
    format_: Annotated[
        ExportFormat, typer.Option("--format", help="TRL dataset format of the rows.")
    ] = ExportFormat.messages,
    all_: Annotated[
        bool, typer.Option("--all", help="Every sample with its verdict, not the training set.")
    ] = False,
    set_: SetOpt = None,
) -> None:
    """Export a generation's curated samples (or preference pairs) as a dataset with a card:
    `datasets.load_from_disk(OUT)`, OUT/train.jsonl, OUT/README.md."""
    cfg = _load(config, set_)
    from tasks.export import ExportError, ExportRequest
    from tasks.export import export as export_dataset

    judge = cfg.judge
    request = ExportRequest(
        flywheel_dir=cfg.flywheel_dir,
        name=cfg.name,
        out=out,
        fmt=format_,
        generation=generation,
        everything=all_,
        chat_template=cfg.model.chat_template,
        system_prompt=cfg.model.system_prompt,
        domain=cfg.domain,
        rewards=tuple(cfg.curation.rewards),
        judge={k: getattr(judge, k) for k in ("model", "rubric", "backend", "k", "combine")}
        if "judge" in cfg.curation.rewards
        else None,
        license=cfg.export.license,
        pairs_per_seed=cfg.export.pairs_per_seed,
        pair_seed=cfg.export.pair_seed,
    )
    import datasets

    datasets.disable_progress_bars()  # one line says what was written
    try:
        result = export_dataset(request)
    except ExportError as e:
        err.print(f"[red]{e}[/red]")
        raise typer.Exit(1) from None
    console.print(
        f"{result.rows} rows of gen-{result.generation:04d} ({result.fmt.value}) -> {result.out}"
    )


@app.command("train-rm")
def train_rm(
    config: ConfigArg,
    steps: Annotated[int, typer.Option(help="Optimizer steps.")] = 300,
    holdout: Annotated[float, typer.Option(help="Share of samples held out.")] = 0.2,
    set_: SetOpt = None,
) -> None:
    """Train the scalar reward model on the flywheel's curated samples; report its agreement
    with the curation verdicts and with the judge on held-out samples."""
    cfg = _load(config, set_)
    from tasks.train_rm import NotEnoughSamples, train_reward_model

    try:
        report = train_reward_model(cfg.flywheel_dir, steps, holdout)
    except NotEnoughSamples as e:
        err.print(f"[red]{e}[/red]")
        raise typer.Exit(1) from None
    console.print_json(json.dumps(report))


app.command("stack")(stack_command)


def main() -> None:  # pragma: no cover
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # No network beyond package registries here; Prefect's telemetry would only log errors.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
