"""A real small flywheel run, read back from its stage manifests: orchestration overhead (P2),
curation ÷ generation time (P3), engine start-up share (P6) and learning efficiency (P7).

The flow runs in this process exactly as `flywheel run` runs it (Prefect's ephemeral API,
MLflow on a SQLite file, tracking on), in a fresh Prefect home. Its wall time is split into
time inside worker processes (`tasks.subproc.WORKER_WALL`: bootstrap, generate, train, eval),
the in-process pure stage work the manifests time (seeds, curate), and the rest: orchestration
(Prefect, MLflow, storage, reports).

P7's baseline is plain SFT of the same base model on as many ground-truth-labelled samples
(the domain's reference solutions of fresh seeds at the flywheel's level mix) as the last
generation trained on, for as many training samples seen as all generations together, then
evaluated by the same eval stage on the same frozen suite.

    python -m bench.bench_flywheel                       # configs/bench.yaml
    python -m bench.bench_flywheel --config configs/demo.yaml
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "configs" / "bench.yaml"


def _outputs(folder: Path) -> dict:
    from tasks import store

    m = store.read_manifest(folder)
    return m.outputs if m else {}


def stage_timings(flywheel_dir: Path, generations: int) -> dict:
    """Seconds per stage kind, summed over generations, from the manifests."""
    from tasks import store

    t = {
        "generate_wall_s": 0.0,
        "engine_load_s": 0.0,
        "decode_s": 0.0,
        "generate_stages": 0,
        "samples": 0,
        "curate_s": 0.0,
        "seeds_pure_s": 0.0,
        "train_wall_s": 0.0,
        "eval_wall_s": 0.0,
    }
    for g in range(0, generations + 1):
        t["eval_wall_s"] += _outputs(store.gen_dir(flywheel_dir, g) / "eval")["generate"]["wall_s"]
        if g == 0:
            continue
        gen = _outputs(store.stage_dir(flywheel_dir, g, "generate"))
        t["generate_wall_s"] += gen["wall_s"]
        t["engine_load_s"] += gen["engine_load_s"]
        t["decode_s"] += gen["generate_s"]
        t["generate_stages"] += 1
        t["samples"] += gen["samples"]
        t["curate_s"] += _outputs(store.stage_dir(flywheel_dir, g, "curate"))["seconds"]
        seeds = _outputs(store.stage_dir(flywheel_dir, g, "seeds"))
        t["seeds_pure_s"] += seeds["seconds"] - seeds.get("model_generate", {}).get("wall_s", 0.0)
        tr = _outputs(store.stage_dir(flywheel_dir, g, "train"))
        t["train_wall_s"] += tr["wall_s"]
    return t


def pass1_trajectory(flywheel_dir: Path, generations: int) -> tuple[list[float], list[dict]]:
    """The champion's pass@1 after each generation's gate (index 0: the base model), and each
    generation's challenger pass@1 with the gate's reason."""
    from tasks import store

    out = [_outputs(store.gen_dir(flywheel_dir, 0) / "eval")["report"]["pass@1"]]
    challengers = []
    for g in range(1, generations + 1):
        gate = _outputs(store.stage_dir(flywheel_dir, g, "gate"))
        out.append(gate["champion"]["report"]["pass@1"])
        challengers.append(
            {
                "pass@1": _outputs(store.stage_dir(flywheel_dir, g, "eval"))["report"]["pass@1"],
                "promoted": gate["decision"]["promote"],
                "reason": gate["decision"]["reason"],
            }
        )
    return out, challengers


def samples_seen(flywheel_dir: Path, generations: int, epochs: float) -> tuple[int, float]:
    """(rows the last generation trained on, training samples seen over all generations)."""
    from tasks import store

    rows = [
        _outputs(store.stage_dir(flywheel_dir, g, "train"))["train_rows"]
        for g in range(1, generations + 1)
    ]
    return rows[-1], sum(rows) * epochs


def sft_baseline(cfg, suite_folder: Path, rows: int, epochs: float, out: Path) -> dict:
    """Plain SFT of the base model on `rows` reference solutions, evaluated like a challenger."""
    from tasks import store
    from tasks.domains import DOMAINS, make_seeds
    from tasks.requests import sft_request
    from tasks.stages import base_model_stage, eval_stage, read_seeds
    from tasks.train import train_in_subprocess

    dom = DOMAINS[cfg.domain]
    suite_q = {s.question for s in read_seeds(suite_folder)}
    seeds = make_seeds(
        dom, rows, cfg.seeds.levels, random.Random("sft-baseline"), suite_q, origin="generator"
    )
    train_file = out / "train.parquet"
    out.mkdir(parents=True, exist_ok=True)
    store.write_parquet(
        [
            {
                "prompt": cfg.model.prompt_template.format(question=s.question),
                "completion": dom.solution(s.question),
            }
            for s in seeds
        ],
        train_file,
    )
    base = base_model_stage.fn(cfg, suite_folder)  # cached: the flywheel made it
    # The train stage's request (generation 0: `train.seed` itself), for `epochs` passes.
    request = sft_request(cfg, 0, base, train_file, out / "model")
    t0 = time.perf_counter()
    metrics = train_in_subprocess(
        dataclasses.replace(request, epochs=epochs, progress=False), log_path=out / "train.log"
    )
    train_s = time.perf_counter() - t0
    report = eval_stage.fn(cfg, out / "eval", str(out / "model"), suite_folder, "sft-baseline")
    return {
        "rows": rows,
        "epochs": epochs,
        "steps": metrics["steps"],
        "train_wall_s": train_s,
        "pass@1": report["pass@1"],
    }


def main(request: dict) -> dict:
    """Worker: run the flywheel on `config` under `tmp`, then the SFT baseline; return figures."""
    tmp = Path(request["tmp"])
    # Before Prefect is imported: a fresh Prefect home (its ephemeral API's database), no
    # telemetry, and MLflow on the run's own SQLite file.
    os.environ["PREFECT_HOME"] = str(tmp / "prefect-home")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    from flows.flywheel import flywheel
    from tasks import subproc
    from tasks.config import load_config

    cfg = load_config(
        request["config"], runs_dir=str(tmp / "runs"), name="bench", **request.get("set", {})
    )
    G = cfg.generations
    t0, wall0 = time.perf_counter(), time.time()
    flywheel(cfg)
    flow_s = time.perf_counter() - t0
    # Until the first stage lands: Prefect's API and MLflow's database starting up.
    from tasks import store

    startup_s = store.read_manifest(cfg.flywheel_dir / "suite").created - wall0
    workers = list(subproc.WORKER_WALL)
    timings = stage_timings(cfg.flywheel_dir, G)
    worker_s = sum(s for _, s in workers)
    pure_s = timings["seeds_pure_s"] + timings["curate_s"]
    trajectory, challengers = pass1_trajectory(cfg.flywheel_dir, G)
    last_rows, seen = samples_seen(cfg.flywheel_dir, G, cfg.train.epochs)
    baseline = None
    if request.get("baseline", True):
        baseline = sft_baseline(
            cfg, cfg.flywheel_dir / "suite", last_rows, seen / last_rows, tmp / "sft-baseline"
        )
    return {
        "config": str(request["config"]),
        "generations": G,
        "flow_s": flow_s,
        "startup_s": startup_s,
        "worker_s": worker_s,
        "workers": [[m, round(s, 2)] for m, s in workers],
        "pure_s": pure_s,
        "overhead_s": flow_s - worker_s - pure_s,
        "timings": timings,
        "champion_pass1": trajectory,
        "challengers": challengers,
        "train_rows_last": last_rows,
        "train_samples_seen": seen,
        "sft_baseline": baseline,
    }


def measure(config: Path = DEFAULT_CONFIG, sets: dict | None = None, baseline: bool = True):
    from tasks.subproc import run_worker

    with tempfile.TemporaryDirectory(prefix="bench-flywheel-") as tmp:
        return run_worker(
            "bench.bench_flywheel",
            {"config": str(config), "tmp": tmp, "set": sets or {}, "baseline": baseline},
            Path(tmp) / "bench.log",
        )


def ratios(m: dict) -> list:
    from bench.report import Goal, Ratio, ratio

    t = m["timings"]
    gens = m["generations"]
    traj = m["champion_pass1"]
    gain = traj[-1] - traj[0]
    out = [
        Ratio(
            "P2",
            "orchestration overhead ÷ generation wall time",
            ratio(m["overhead_s"], t["generate_wall_s"]),
            Goal("<=", 0.03),
            unit="%",
            detail=f"({m['flow_s']:.1f} s flow - {m['worker_s']:.1f} s in workers - "
            f"{m['pure_s']:.1f} s seeds/curate) ÷ {t['generate_wall_s']:.1f} s in {gens} "
            f"generate stage(s); {m['config']}",
        ),
        Ratio(
            "P2",
            "per-generation overhead (no start-up) ÷ generation wall time",
            ratio(m["overhead_s"] - m["startup_s"], t["generate_wall_s"]),
            Goal("<=", 0.03),
            unit="%",
            detail=f"({m['overhead_s']:.1f} - {m['startup_s']:.1f} s start-up) ÷ "
            f"{t['generate_wall_s']:.1f} s: what a long-lived Prefect server and MLflow "
            "database leave",
        ),
        Ratio(
            "P2",
            "orchestration overhead ÷ flow wall time",
            ratio(m["overhead_s"], m["flow_s"]),
            None,
            unit="%",
            detail=f"{m['overhead_s']:.1f} s ÷ {m['flow_s']:.1f} s; {m['startup_s']:.1f} s of it "
            "before the first stage (Prefect API + MLflow database start)",
        ),
        Ratio(
            "P3",
            "curation time ÷ generation time (flywheel, same samples)",
            ratio(t["curate_s"], t["generate_wall_s"]),
            Goal("<=", 0.05),
            unit="%",
            detail=f"curate {t['curate_s']:.2f} s ÷ generate {t['generate_wall_s']:.1f} s, "
            f"{t['samples']:,} samples",
        ),
        Ratio(
            "P6",
            "generate stage wall ÷ pure phases (flywheel)",
            ratio(t["generate_wall_s"], t["engine_load_s"] + t["decode_s"]),
            None,
            detail=f"{t['generate_wall_s']:.1f} s ÷ (load {t['engine_load_s']:.1f} + decode "
            f"{t['decode_s']:.1f} s); {t['generate_stages']} stage(s), one engine start each",
        ),
        Ratio(
            "P7",
            "champion pass@1 gain per generation",
            gain / gens,
            None,
            unit="pass@1/gen",
            detail="champion pass@1 "
            + " -> ".join(f"{p:.3f}" for p in traj)
            + "; challengers "
            + ", ".join(
                f"{c['pass@1']:.3f} ({'promoted' if c['promoted'] else 'kept champion'})"
                for c in m.get("challengers", [])
            ),
        ),
    ]
    b = m.get("sft_baseline")
    if b:
        sft_gain = b["pass@1"] - traj[0]
        out.append(
            Ratio(
                "P7",
                "flywheel gain ÷ plain SFT gain (gold labels, equal compute)",
                ratio(gain, sft_gain) if sft_gain > 0 else None,
                Goal(">=", 1.0),
                detail=f"{gain:+.3f} ÷ {sft_gain:+.3f} (SFT on {b['rows']} reference solutions, "
                f"{b['epochs']:.2f} epochs = {m['train_samples_seen']:.0f} samples seen, "
                f"pass@1 {b['pass@1']:.3f})",
                note="" if sft_gain > 0 else "SFT baseline did not gain; ratio undefined",
            )
        )
    return out


def cli() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    ap.add_argument("--no-baseline", action="store_true", help="skip P7's SFT baseline")
    args = ap.parse_args()
    m = measure(args.config, baseline=not args.no_baseline)
    for r in ratios(m):
        print(f"{r.key} {r.name}: {r.value}  ({r.detail})")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1].endswith(".json"):
        from tasks.subproc import worker_main

        worker_main(main)
    else:
        cli()
