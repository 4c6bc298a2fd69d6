"""Where a finished flywheel's minutes went: wall and CPU seconds per generation and stage, read
from the stage manifests, and the per-generation results beside them.

CPU seconds are the worker processes' own (`cpu_s`, user + system, added by `tasks.subproc`):
on a shared, loaded machine they measure the work where wall time also measures the neighbours.
Wall seconds per stage are the gaps between consecutive manifests' `created` times (the stage
with its orchestration; the first stage's gap starts at the frozen suite), so they add up to the
run's wall time. Where a figure is not recorded it is None and the output says so: the bootstrap
models record their training's wall seconds in their own manifests, never their CPU seconds
(`tasks.stages.setup` and `tasks.stages.judge` keep only the worker's path), and the
orchestrator's own CPU (Prefect, MLflow, the rules in curation) is in no manifest: time the whole
command (`/usr/bin/time -v`) for it.

    python -m bench.demo_profile runs/demo [--before bench/results/<stamp>-demo.json] [--json]

`--before` puts the per-generation table of an earlier run (a JSON of this script, or the demo
record `bench/results/20261206T020540Z-demo.json`) beside this one. `--json` writes
bench/results/<UTC stamp>-demo-profile.json.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path

from tasks import store
from tasks.judge_qc import judge_figures
from tasks.outputs import STAGES

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def _cpu(*stats: dict | None) -> float | None:
    """Sum of the workers' `cpu_s`; None when none of them recorded it."""
    values = [s["cpu_s"] for s in stats if s and s.get("cpu_s") is not None]
    return sum(values) if values else None


def stage_cpu(stage: str, out: dict) -> float | None:
    """The CPU seconds of a stage's worker processes, from its manifest outputs."""
    if stage == "seeds":
        return _cpu(out.get("model_generate"))
    if stage == "generate":
        return _cpu(*out.get("sources", []))
    if stage == "curate":
        return _cpu(out.get("judge"))
    if stage == "train":
        return _cpu(out)
    if stage == "eval":
        return _cpu(out.get("generate"), out.get("greedy_generate"))
    return None  # gate: in-process, no worker


def stage_workers(stage: str, out: dict) -> dict[str, dict]:
    """A stage's worker runs by name, each with what it recorded (wall_s, cpu_s, engine_load_s,
    generate_s, ...): the part of a worker that is not generation is its start-up."""
    runs = {
        "seeds": {"model_generate": out.get("model_generate")},
        "generate": {f"sample[{i}]": r for i, r in enumerate(out.get("sources", []))},
        "curate": {"judge": out.get("judge")},
        "train": {"train": out if "cpu_s" in out else None},
        "eval": {"sample": out.get("generate"), "greedy": out.get("greedy_generate")},
    }.get(stage, {})
    keys = ("wall_s", "cpu_s", "engine_load_s", "generate_s", "seconds")
    return {
        name: {k: r[k] for k in keys if isinstance(r.get(k), int | float)}
        for name, r in runs.items()
        if r
    }


def models(flywheel_dir: Path) -> list[dict]:
    """The bootstrap models under the runs folder: stage, path, training wall seconds."""
    out = []
    for folder in sorted((flywheel_dir.parent / "models").glob("*")):
        man = store.read_manifest(folder)
        if man is not None:
            out.append(
                {
                    "stage": man.stage,
                    "path": str(folder),
                    "created": man.created,
                    "train_wall_s": man.outputs.get("seconds"),
                    "cpu_s": None,  # not recorded: the stages keep only the worker's path
                }
            )
    return out


def profile(flywheel_dir: Path) -> dict:
    """Every stage of every generation with its wall and CPU seconds, in the order they ran."""
    suite = store.read_manifest(flywheel_dir / "suite")
    start = suite.created if suite else None
    events = [
        {"generation": None, "stage": m["stage"], "created": m["created"], "cpu_s": None}
        for m in models(flywheel_dir)
        if start is None or m["created"] >= start  # built by this run, not taken from the cache
    ]
    for gdir in sorted(flywheel_dir.glob("gen-[0-9]*")):
        g = int(gdir.name.split("-")[1])
        for stage in STAGES:
            man = store.read_manifest(gdir / stage)
            if man is not None:
                events.append(
                    {
                        "generation": g,
                        "stage": stage,
                        "created": man.created,
                        "cpu_s": stage_cpu(stage, man.outputs),
                        "workers": stage_workers(stage, man.outputs),
                    }
                )
    events.sort(key=lambda e: e["created"])
    prev = start
    for e in events:
        e["wall_s"] = e["created"] - prev if prev is not None else None
        prev = e["created"]
    return {
        "flywheel": str(flywheel_dir),
        "stages": events,
        "models": models(flywheel_dir),
        "totals": totals(events),
        "generations": generation_rows(flywheel_dir),
    }


def totals(events: list[dict]) -> dict:
    """Wall and recorded CPU seconds by stage name and in all."""
    out: dict[str, dict] = {}
    for e in events:
        t = out.setdefault(e["stage"], {"wall_s": 0.0, "cpu_s": 0.0})
        t["wall_s"] += e["wall_s"] or 0.0
        t["cpu_s"] += e["cpu_s"] or 0.0
    out["all"] = {
        "wall_s": sum(e["wall_s"] or 0.0 for e in events),
        "cpu_s": sum(e["cpu_s"] or 0.0 for e in events),
    }
    return out


def generation_rows(flywheel_dir: Path) -> list[dict]:
    """Per generation: pass@1, greedy pass@1, accept rate, the judge's balanced accuracy with
    its interval and how many candidates it saw, and the gate's decision."""
    rows = []
    for gdir in sorted(flywheel_dir.glob("gen-[0-9]*")):
        out = {s: (m.outputs if (m := store.read_manifest(gdir / s)) else {}) for s in STAGES}
        report = out["eval"].get("report", {})
        qc = out["curate"].get("judge")
        ba = judge_figures(qc)["balanced_accuracy"]
        decision = out["gate"].get("decision", {})
        rows.append(
            {
                "generation": int(gdir.name.split("-")[1]),
                "pass@1": report.get("pass@1"),
                "greedy_pass@1": report.get("greedy_pass@1"),
                "accept_rate": out["curate"].get("accept_rate"),
                "judge_bal_acc": [ba.value, ba.low, ba.high] if qc else None,
                "judged": (qc or {}).get("candidates"),
                "promote": decision.get("promote"),
                "gate": decision.get("rule"),
            }
        )
    return rows


def rows_from_json(path: Path) -> list[dict]:
    """The per-generation rows of an earlier JSON: this script's, or the demo record's."""
    data = json.loads(path.read_text())
    rows = []
    for r in data["generations"]:
        if "pass@1" in r:  # this script's own
            rows.append(r)
            continue
        ev, qc, gate = r.get("eval", {}), r.get("judge"), r.get("gate", {})
        ba = judge_figures(qc)["balanced_accuracy"]
        rows.append(
            {
                "generation": int(str(r["generation"]).split("-")[-1]),
                "pass@1": ev.get("pass@1"),
                "greedy_pass@1": ev.get("greedy_pass@1"),
                "accept_rate": r.get("curate", {}).get("accept_rate"),
                "judge_bal_acc": [ba.value, ba.low, ba.high] if qc else None,
                "judged": None,
                "promote": gate.get("promote"),
                "gate": gate.get("rule"),
            }
        )
    return rows


def _f(v: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if v is None else fmt.format(v)


def _row_text(r: dict | None) -> list[str]:
    if r is None:
        return [""] * 5
    ba = r["judge_bal_acc"]
    judge = "-" if not ba or ba[0] is None else f"{ba[0]:.3f} [{ba[1]:.3f}, {ba[2]:.3f}]"
    if ba and r.get("judged"):
        judge += f" n={r['judged']}"
    gate = "-" if r["promote"] is None else ("promote" if r["promote"] else r["gate"])
    pct = "{:.1%}"
    return [
        _f(r["pass@1"], pct),
        _f(r["greedy_pass@1"], pct),
        _f(r["accept_rate"], pct),
        judge,
        gate,
    ]


def render(result: dict, before: list[dict] | None = None) -> str:
    """The stage table, the totals and the per-generation table (before | after) as text."""
    lines = [f"{'gen':>4} {'stage':<16} {'wall s':>8} {'cpu s':>8}"]
    for e in result["stages"]:
        g = "-" if e["generation"] is None else str(e["generation"])
        lines.append(f"{g:>4} {e['stage']:<16} {_f(e['wall_s']):>8} {_f(e['cpu_s']):>8}")
        for name, w in e.get("workers", {}).items():
            parts = ", ".join(f"{k} {v:.1f}" for k, v in w.items())
            lines.append(f"{'':>4}   {name:<14} {parts}")
    lines.append("")
    lines.append(f"{'stage':<21} {'wall s':>8} {'cpu s':>8}   (cpu: worker processes only)")
    for name, t in result["totals"].items():
        lines.append(f"{name:<21} {t['wall_s']:>8.1f} {t['cpu_s']:>8.1f}")
    for m in result["models"]:
        lines.append(
            f"model {m['stage']}: training wall {_f(m['train_wall_s'])} s, "
            f"CPU not recorded ({Path(m['path']).name})"
        )
    lines.append("")
    head = ["pass@1", "greedy", "accept", "judge bal.acc [95 %]", "gate"]
    after = {r["generation"]: r for r in result["generations"]}
    earlier = {r["generation"]: r for r in before or []}
    widths = [7, 7, 7, 32, 22]

    def fmt(cells: list[str]) -> str:
        return " ".join(f"{c:<{w}}" for c, w in zip(cells, widths, strict=True))

    title = f"{'gen':>4} " + (f"{'before':<{sum(widths) + 4}} | after" if before else "")
    lines.append(title)
    lines.append(f"{'':>4} " + (fmt(head) + " | " if before else "") + fmt(head))
    for g in sorted(after.keys() | earlier.keys()):
        left = fmt(_row_text(earlier.get(g))) + " | " if before else ""
        lines.append((f"{g:>4} " + left + fmt(_row_text(after.get(g)))).rstrip())
    return "\n".join(lines)


def save(result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-demo-profile.json"
    path.write_text(json.dumps(result, indent=2, default=str))
    return path


def cli() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("flywheel", type=Path, help="a flywheel folder, e.g. runs/demo")
    ap.add_argument("--before", type=Path, help="an earlier run's JSON, shown side by side")
    ap.add_argument("--json", action="store_true", help="write bench/results/<stamp>-…json")
    args = ap.parse_args()
    result = profile(args.flywheel)
    before = rows_from_json(args.before) if args.before else None
    if before is not None:
        result["before"] = {"source": str(args.before), "generations": before}
    print(render(result, before))
    if args.json:
        print(f"results: {save(result)}")


if __name__ == "__main__":
    cli()
