"""Why did a generation's challenger lose what it lost? Train it again from its own curated set
with other training settings, evaluate it on the same suite, and print pass@1, greedy pass@1
and greedy pass@1 per level beside the original's.

    python -m bench.retrain runs/p7/runs/p7-flywheel --generation 1 \\
        --variant warmup=train.warmup_ratio=0.3 --variant epochs=train.epochs=4
    python -m bench.retrain runs/p7/runs/p7-rft --base-from runs/p7/runs/p7-flywheel \\
        --variant epochs2=train.epochs=2

Each variant is a flywheel folder of its own beside the source (`<source>-retrain-<name>`)
holding copies of the generation's seeds, generate and curate stages, so the train and eval
stages run exactly as in the flywheel and a rerun resumes. It starts from the base model, so
it retrains generation 1 (or any generation whose champion was the base). The config is the
bench's (`--config`) with the variant's overrides: pass the same `--set`s the source ran with.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import sys
from pathlib import Path
from typing import Any

from bench.bench_flywheel import DEFAULT_CONFIG, isolate_services, stage_outputs


def greedy_levels(eval_folder: Path) -> dict[int, float]:
    """Greedy pass@1 per difficulty level of an eval's greedy items."""
    from tasks import store
    from tasks.stages import GREEDY_ITEMS

    by: dict[int, list[float]] = collections.defaultdict(list)
    for r in store.read_parquet(eval_folder / GREEDY_ITEMS):
        by[r["difficulty"]].append(r["correct"] / r["n"])
    return {k: sum(v) / len(v) for k, v in sorted(by.items())}


def figures(eval_folder: Path) -> dict:
    from tasks.gate import GREEDY

    rep = stage_outputs(eval_folder)["report"]
    return {
        "pass@1": rep["pass@1"],
        "greedy": rep[GREEDY],
        "greedy_levels": greedy_levels(eval_folder),
    }


def retrain(
    config: Path, source: Path, base_eval: Path, generation: int, name: str, sets: dict[str, Any]
) -> dict:
    """Generation `generation` of the flywheel in `source`, trained again with `sets` from the
    model `base_eval` evaluated."""
    from bench.bench_p7 import arm_config
    from tasks import store
    from tasks.stages import eval_stage, train_stage

    base = stage_outputs(base_eval)["model"]
    cfg = arm_config(config, source.parent, f"{source.name}-retrain-{name}", sets)
    gdir = store.gen_dir(cfg.flywheel_dir, generation)
    for stage in ("seeds", "generate", "curate"):
        if not (gdir / stage).exists():
            shutil.copytree(store.stage_dir(source, generation, stage), gdir / stage)
    trained = train_stage.fn(cfg, generation, base)
    suite = base_eval.parents[1] / "suite"  # frozen with the base, beside its gen-0000
    eval_stage.fn(cfg, gdir / "eval", str(trained / "model"), suite, cfg.name)
    return figures(gdir / "eval") | {"steps": stage_outputs(trained).get("steps"), "set": sets}


def line(name: str, f: dict) -> str:
    levels = ", ".join(f"{k}: {v:.3f}" for k, v in f["greedy_levels"].items())
    steps = f" ({f['steps']} steps)" if f.get("steps") else ""
    head = f"{name:>12}: pass@1 {f['pass@1']:.3f}, greedy {f['greedy']:.3f}"
    return f"{head} [levels {levels}]{steps}"


def cli(argv: list[str] | None = None) -> int:
    from bench.bench_p7 import parse_set

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("source", type=Path, help="a flywheel folder, e.g. runs/p7/runs/p7-flywheel")
    p.add_argument("--generation", type=int, default=1)
    p.add_argument(
        "--base-from",
        type=Path,
        help="the flywheel folder whose gen-0000 and suite hold the base model and the suite "
        "(default: the source; P7's rft arm: its flywheel arm's)",
    )
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    p.add_argument("--set", action="append", default=[], help="key=value for every variant")
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        help="name=key=value[,key=value]; 'name=' alone retrains with the source's settings",
    )
    args = p.parse_args(argv)
    source = args.source.resolve()
    isolate_services(source.parent / "retrain-home")
    shared = dict(parse_set(s) for s in args.set)
    base_eval = (args.base_from or source).resolve() / "gen-0000" / "eval"
    print(line("base", figures(base_eval)))
    print(line("source", figures(source / f"gen-{args.generation:04d}" / "eval")), flush=True)
    for spec in args.variant:
        name, _, sets = spec.partition("=")
        over = dict(parse_set(s) for s in sets.split(",") if s)
        sets = shared | over
        print(line(name, retrain(args.config, source, base_eval, args.generation, name, sets)))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
