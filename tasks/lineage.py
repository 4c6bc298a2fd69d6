"""One lineage record per generation, and the markdown summary shown in the Prefect UI.

The record chains what produced the challenger: seed source (file or dataset fingerprint) →
seed-set hash → generator model → sampling params → candidate (generated) set hash → accepted
set hash → training set and config → challenger model and registry version → eval report →
gate decision. It is a projection of the
generation's loaded stage outputs (`tasks.outputs.load_generation`) only, so it is the same
whether the generation ran in one go or was resumed. Pure: the caller loads the generation.
"""

from __future__ import annotations

from tasks.judge_qc import judge_figures
from tasks.outputs import Generation

LINEAGE_FILE = "lineage.json"
"""The record's file in its generation folder (`flywheel lineage` reads them back)."""

TRAIN_KEYS = ("train_rows", "steps", "train_loss_first", "train_loss_last", "seconds", "hash")


def generation_lineage(gen: Generation, train_config: dict) -> dict:
    """The lineage of one completed generation (every stage through the gate)."""
    gen.require("seeds", "generate", "curate", "train", "eval", "gate")
    seeds, out, cur, tr, gate = gen.seeds, gen.generate, gen.curate, gen.train, gen.gate
    return {
        "generation": gen.number,
        "seeds": {
            "hash": seeds.hash,
            "count": seeds.count,
            "origins": seeds.origins,
            "source": seeds.source,  # the seed file or dataset read (None: generated, evolved)
        },
        "generator_model": out.model,
        "sampling": out.params,
        "candidates": {"hash": out.hash, "samples": out.samples},
        # Which (model, prompt template) produced how many candidates: policy and teachers.
        "sources": [
            {"model": r["model"], "template": r["template"], "samples": r["rows"]}
            for r in out.sources
        ],
        "accepted": {"hash": cur.hash, "samples": cur.accepted, "counts": cur.counts},
        "training": {
            "mode": tr.mode,
            "base_model": tr.base_model,
            "config": train_config,
            **{k: getattr(tr, k) for k in TRAIN_KEYS},
        },
        "challenger": {
            "model": str(gen.folder / "train" / "model"),
            "version": gate.challenger_version,
        },
        "eval": gen.eval.report,
        "gate": gate.decision.to_dict(),
        "champion_after": {
            "model": gate.champion.model,
            "version": gate.champion.version,
            "generation": gate.champion.generation,
        },
    }


def lineage_tags(lineage: dict) -> dict[str, str]:
    """The record's headline as tags on the challenger's registered model version."""
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


def comparison(gens: list[Generation]) -> tuple[list[str], list[tuple[str, list[object]]]]:
    """Every generation side by side: column names (`gen-0000` = base model, …) and one row per
    metric, from the eval, seeds, curate, train and gate outputs. Generations that have not
    finished their eval are left out."""
    columns, cells = [], []
    for gen in gens:
        if gen.eval is None:
            continue
        columns.append(gen.folder.name)
        seeds, cur, tr, gate = gen.seeds, gen.curate, gen.train, gen.gate
        d = gate.decision if gate else None
        cells.append(
            {
                **{k: v for k, v in gen.eval.report.items() if k != "items"},
                **{f"suite.{name}.pass@1": r["pass@1"] for name, r in gen.eval.suites.items()},
                "seeds.difficulty": seeds.difficulty if seeds else None,
                "curate.accept_rate": cur.accept_rate if cur else None,
                "curate.accepted": cur.accepted if cur else None,
                **{
                    f"judge.{k}": f.value
                    for k, f in judge_figures(cur.judge if cur else None).items()
                },
                "train.rows": tr.train_rows if tr else None,
                "train.loss_last": tr.train_loss_last if tr else None,
                "gate.delta": d.delta if d else None,
                "gate.ci_low": d.ci_low if d else None,
                "gate": None if d is None else ("promoted" if d.promote else "rejected"),
            }
        )
    names: list[str] = []
    for c in cells:  # first-seen order keeps related metrics together
        names += [k for k in c if k not in names]
    rows = [(n, [c.get(n) for c in cells]) for n in names]
    return columns, [(n, vals) for n, vals in rows if any(v is not None for v in vals)]
