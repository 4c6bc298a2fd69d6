"""Every benchmark in one run: one table, one JSON under bench/results/ with the machine.

`BENCHMARKS` is the registry: name -> (the ratios it measures, whether it can run here, the
function that runs it). A benchmark whose feature is not in the code yet (the batched judge,
packed SFT) reports "not available" with the reason instead of failing; one that fails is
reported as failed with its error, and the others still run.

    python -m bench.run_all                  # what `make bench` runs (~1 h on 2 cores)
    python -m bench.run_all --quick          # small sizes: checks that everything works
    python -m bench.run_all --full           # the demo config for the flywheel (hours on CPU)
    python -m bench.run_all --only curate,generate
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench.report import (
    BenchResult,
    Goal,
    Ratio,
    machine_info,
    render_table,
    result_filename,
    results_document,
    unavailable,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"

# Sizes per mode: `default` is `make bench`; `quick` checks the plumbing in a few minutes.
SIZES = {
    "quick": {
        "prompts": 32,
        "max_tokens": 32,
        "curate": (2_000, 20_000),
        "config": "tiny",
        "judge_candidates": 16,
        "packing_steps": 6,
        "gate_trials": 200,
        "worker_start_runs": 1,
    },
    "default": {
        "prompts": 256,
        "max_tokens": 48,
        "curate": (10_000, 100_000),
        "config": "bench",
        "judge_candidates": 64,
        "packing_steps": 24,
    },
    "full": {
        "prompts": 512,
        "max_tokens": 96,
        "curate": (10_000, 100_000),
        "config": "demo",
        "judge_candidates": 128,
        "packing_steps": 48,
    },
}


@dataclass(frozen=True)
class Benchmark:
    keys: tuple[str, ...]  # the ratios it reports (P1, ...)
    available: Callable[[], str | None]  # None when it can run, else why not
    run: Callable[[dict], BenchResult]  # sizes -> result


def _always() -> str | None:
    return None


def _module_missing(module: str) -> Callable[[], str | None]:
    def check() -> str | None:
        return None if importlib.util.find_spec(module) else f"no module {module}"

    return check


def run_generate(sizes: dict) -> BenchResult:
    from bench import bench_generate

    m = bench_generate.measure(prompts=sizes["prompts"], n=8, max_tokens=sizes["max_tokens"])
    return BenchResult("generate", bench_generate.ratios(m), m)


def run_curate(sizes: dict) -> BenchResult:
    from bench import bench_curate

    m = bench_curate.measure(sizes["curate"])
    return BenchResult("curate", bench_curate.ratios(m), m)


def run_flywheel(sizes: dict) -> BenchResult:
    from bench import bench_flywheel

    m = bench_flywheel.measure(ROOT / "configs" / f"{sizes['config']}.yaml")
    return BenchResult("flywheel", bench_flywheel.ratios(m), m)


def run_p7(sizes: dict) -> BenchResult:
    from bench import bench_p7

    m = bench_p7.measure(ROOT / "configs" / f"{sizes['config']}.yaml")
    return BenchResult("p7", bench_p7.ratios(m), m)


def judge_missing() -> str | None:
    # The batched judge (one engine call per batch, rubric prefix cached) and its benchmark.
    return _module_missing("tasks.judge")() or _module_missing("bench.bench_judge")()


def packing_missing() -> str | None:
    from tasks.config import TrainConfig

    if "packing" not in TrainConfig.model_fields:
        return "no train.packing option in tasks.config.TrainConfig"
    return _module_missing("bench.bench_packing")()


def _run_module(name: str) -> Callable[[dict], BenchResult]:
    """A benchmark module's own `run(sizes) -> BenchResult` (the P4/P5 modules)."""

    def run(sizes: dict) -> BenchResult:
        return importlib.import_module(f"bench.{name}").run(sizes)

    return run


BENCHMARKS: dict[str, Benchmark] = {
    "generate": Benchmark(("P1", "P6", "P9"), _always, run_generate),
    "curate": Benchmark(("P3", "P8"), _always, run_curate),
    "flywheel": Benchmark(("P2", "P3", "P6"), _always, run_flywheel),
    "p7": Benchmark(("P7",), _always, run_p7),
    "judge": Benchmark(("P4",), judge_missing, _run_module("bench_judge")),
    "packing": Benchmark(("P5",), packing_missing, _run_module("bench_packing")),
    "gate_null": Benchmark(("G1", "G2", "G3"), _always, _run_module("bench_gate_null")),
    "worker_start": Benchmark(("W1",), _always, _run_module("bench_worker_start")),
}

# Names and goals of ratios a benchmark reports, for the rows of one that could not run.
PLACEHOLDERS: dict[str, tuple[str, Goal | None]] = {
    "P1": ("vLLM tokens/s ÷ HF generate tokens/s", Goal(">=", 1.0)),
    "P2": ("orchestration overhead ÷ generation wall time", Goal("<=", 0.03)),
    "P3": ("curation ÷ generation time; samples/s per core", None),
    "P4": ("batched judge ÷ one call per sample", Goal(">=", 5.0)),
    "P5": ("packed SFT tokens/s ÷ padded SFT tokens/s", Goal(">=", 1.5)),
    "P6": ("generation wall ÷ pure phases", None),
    "P7": ("flywheel gain ÷ one-shot RFT gain", Goal(">=", 1.2)),
    "P8": ("curation peak RSS, 100k ÷ 10k", Goal("<=", 1.5)),
    "P9": (
        "vLLM generate worker wall, engine in its own processes ÷ in the worker",
        Goal(">=", 1.2),
    ),
    "G1": ("false promotions under the null, default gate", Goal("<=", 0.06)),
    "G2": ("false promotions under the null, margin 0", None),
    "G3": ("promotions at a true +0.02 gain, default gate", None),
    "W1": ("tiny flywheel wall, fresh-interpreter ÷ forked workers", Goal(">=", 2.0)),
}


def placeholder_rows(keys: tuple[str, ...], note: str, failed: bool) -> list[Ratio]:
    rows = []
    for k in keys:
        name, goal = PLACEHOLDERS[k]
        r = unavailable(k, name, note, goal)
        if failed:
            r.note = note
        rows.append(r)
    return rows


def run(names: list[str], mode: str) -> list[BenchResult]:
    sizes, results = SIZES[mode], []
    for name in names:
        bench = BENCHMARKS[name]
        why = bench.available()
        if why is not None:
            results.append(BenchResult(name, placeholder_rows(bench.keys, why, failed=False)))
            continue
        t0 = time.perf_counter()
        try:
            res = bench.run(sizes)
        except Exception as e:  # one failed benchmark must not hide the others' figures
            traceback.print_exc()
            res = BenchResult(
                name,
                placeholder_rows(bench.keys, f"failed: {type(e).__name__}: {e}"[:300], True),
                {"error": traceback.format_exc()[-3000:]},
            )
        res.seconds = time.perf_counter() - t0
        results.append(res)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small sizes, a plumbing check")
    mode.add_argument("--full", action="store_true", help="the demo config for the flywheel")
    ap.add_argument("--only", help=f"comma list of {', '.join(BENCHMARKS)}")
    ap.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON")
    args = ap.parse_args()
    names = args.only.split(",") if args.only else list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        ap.error(f"unknown benchmark(s) {unknown}; known: {sorted(BENCHMARKS)}")
    mode_name = "quick" if args.quick else "full" if args.full else "default"

    from rich.console import Console

    console = Console(width=None if Console().is_terminal else 200)
    machine = machine_info()
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    results = run(names, mode_name)
    meta = {
        "mode": mode_name,
        "sizes": SIZES[mode_name],
        "started": started.isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    doc = results_document(results, machine, meta)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / result_filename(machine, started.strftime("%Y%m%dT%H%M%SZ"))
    path.write_text(json.dumps(doc, indent=2, default=str))
    gpu = ", ".join(machine["gpu"]) or "no GPU"
    title = (
        f"Flywheel benchmarks ({mode_name}) — {machine['cpu']}, {machine['cores']} cores, "
        f"{machine['ram_gib']} GiB, {gpu}; load at start {machine['load_avg_at_start']}"
    )
    console.print(render_table([r for res in results for r in res.ratios], title))
    console.print(f"{meta['seconds']:.0f} s in all; results: {path}")


if __name__ == "__main__":
    main()
