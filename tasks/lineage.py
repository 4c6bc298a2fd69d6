"""One lineage record per generation, and the markdown summary shown in the Prefect UI.

The record chains what produced the challenger: seed-set hash → generator model → sampling
params → candidate (generated) set hash → accepted set hash → training set and config →
challenger model and registry version → eval report → gate decision. It is read back from the
stage manifests only, so it is the same whether the generation ran in one go or was resumed.
Pure apart from reading manifests.
"""

from __future__ import annotations

from pathlib import Path

from tasks import store
from tasks.judge_qc import judge_figures

TRAIN_KEYS = ("train_rows", "steps", "train_loss_first", "train_loss_last", "seconds", "hash")


def generation_lineage(gen_folder: Path, train_config: dict) -> dict:
    """The lineage of one completed generation (every stage through the gate)."""

    def outputs(stage: str) -> dict:
        man = store.read_manifest(Path(gen_folder) / stage)
        if man is None:
            raise FileNotFoundError(f"{Path(gen_folder) / stage}: stage has not completed")
        return man.outputs

    seeds, gen, cur, tr, ev, gate = (
        outputs(s) for s in ("seeds", "generate", "curate", "train", "eval", "gate")
    )
    return {
        "generation": int(Path(gen_folder).name.split("-")[1]),
        "seeds": {"hash": seeds["hash"], "count": seeds["count"], "origins": seeds["origins"]},
        "generator_model": gen["model"],
        "sampling": gen["params"],
        "candidates": {"hash": gen["hash"], "samples": gen["samples"]},
        # Which (model, prompt template) produced how many candidates: policy and teachers.
        "sources": [
            {"model": r["model"], "template": r["template"], "samples": r["rows"]}
            for r in gen.get("sources", [])
        ],
        "accepted": {"hash": cur["hash"], "samples": cur["accepted"], "counts": cur["counts"]},
        "training": {
            "mode": tr.get("mode", "sft"),
            "base_model": tr["base_model"],
            "config": train_config,
            **{k: tr.get(k) for k in TRAIN_KEYS},
        },
        "challenger": {
            "model": str(Path(gen_folder) / "train" / "model"),
            "version": gate.get("challenger_version"),
        },
        "eval": ev["report"],
        "gate": gate["decision"],
        "champion_after": {
            "model": gate["champion"]["model"],
            "version": gate["champion"].get("version"),
            "generation": gate["champion"].get("generation"),
        },
    }


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f} %"


def generation_markdown(lineage: dict, accepted: list[dict], rejected: list[dict]) -> str:
    """A short report of one generation: metrics, the gate's decision, a few samples."""
    g, ev, gate = lineage["generation"], lineage["eval"], lineage["gate"]
    verdict = "**promoted**" if gate["promote"] else "**kept the champion**"
    lines = [
        f"# Generation {g}",
        "",
        f"Gate: {verdict}. {gate['reason']}",
        "",
        "| metric | champion | challenger |",
        "|---|---|---|",
        f"| {gate['metric']} | {gate['champion']:.4f} | {gate['challenger']:.4f} |",
    ]
    lines += [
        f"| {k} | | {_pct(v) if k != 'mean_tokens' else f'{v:.1f}'} |"
        for k, v in ev.items()
        if k != "items"
    ]
    lines += [
        "",
        f"Seeds {lineage['seeds']['count']} → samples {lineage['candidates']['samples']} → "
        f"kept {lineage['accepted']['samples']} → trained on {lineage['training']['train_rows']}",
        "",
    ]
    for title, rows in (("Accepted samples", accepted), ("Rejected samples", rejected)):
        lines += [f"## {title}", ""]
        for r in rows:
            text = r["completion"].replace("\n", " ⏎ ").replace("|", "\\|")
            prompt = r["prompt"].strip().replace("|", "\\|")
            lines.append(f"- `{prompt}` → `{text}` ({r.get('reason', '')})")
        lines.append("")
    return "\n".join(lines)


def comparison(flywheel_dir: Path) -> tuple[list[str], list[tuple[str, list[object]]]]:
    """Every generation side by side: column names (`gen-0000` = base model, …) and one row per
    metric, read from the eval, curate, train and gate manifests. Generations that have not
    finished their eval are left out."""
    folders = [
        d
        for d in sorted(Path(flywheel_dir).glob("gen-[0-9]*"))
        if store.read_manifest(d / "eval") is not None
    ]

    def outputs(gdir: Path, stage: str) -> dict:
        man = store.read_manifest(gdir / stage)
        return man.outputs if man else {}

    columns, cells = [], []
    for d in folders:
        columns.append(d.name)
        ev, cur = outputs(d, "eval")["report"], outputs(d, "curate")
        tr, gate = outputs(d, "train"), outputs(d, "gate").get("decision", {})
        cells.append(
            {
                **{k: v for k, v in ev.items() if k != "items"},
                **{
                    f"suite.{name}.pass@1": r["pass@1"]
                    for name, r in outputs(d, "eval").get("suites", {}).items()
                },
                "seeds.difficulty": outputs(d, "seeds").get("difficulty"),
                "curate.accept_rate": cur.get("accept_rate"),
                "curate.accepted": cur.get("accepted"),
                **{f"judge.{k}": f.value for k, f in judge_figures(cur.get("judge")).items()},
                "train.rows": tr.get("train_rows"),
                "train.loss_last": tr.get("train_loss_last"),
                "gate.delta": gate.get("delta"),
                "gate.ci_low": gate.get("ci_low"),
                "gate": None if not gate else ("promoted" if gate["promote"] else "rejected"),
            }
        )
    names: list[str] = []
    for c in cells:  # first-seen order keeps related metrics together
        names += [k for k in c if k not in names]
    rows = [(n, [c.get(n) for c in cells]) for n in names]
    return columns, [(n, vals) for n, vals in rows if any(v is not None for v in vals)]
