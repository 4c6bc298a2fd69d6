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
