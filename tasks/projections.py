"""The reports' figures as projections of one loaded `Generation` (tasks/outputs.py): the
summary-table row (`flywheel run`, `flywheel status` without tracking), the MLflow metrics and
tags of a generation's run. Pure: no Prefect, MLflow or file reads, so the same figures come
out whether a generation ran in one go or was resumed, and the tests build them from records.
"""

from __future__ import annotations

import math
from typing import Any

from tasks.judge_qc import JUDGE_COLUMNS, judge_figures
from tasks.outputs import CurateOutputs, Generation, SeedsOutputs


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one level with dotted keys: MLflow params and metrics are flat names."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def judge_columns(qc: dict | None) -> dict[str, float | None]:
    """The judge's summary columns from a curate manifest's QC dict (None where a figure is
    undefined or the manifest predates it)."""
    figures = judge_figures(qc)
    return {label: figures[name].value for label, name in JUDGE_COLUMNS.items()}


def generation_row(gen: Generation) -> dict:
    """One line of the summary table (None where a stage has not landed)."""
    seeds, cur, tr, ev, gate = gen.seeds, gen.curate, gen.train, gen.eval, gen.gate
    origins = seeds.origins if seeds else {}
    return {
        "gen": gen.number,
        "level": seeds.difficulty if seeds else None,
        "seeds": seeds.count if seeds else None,
        "by source": " ".join(f"{k}:{v}" for k, v in sorted(origins.items())),
        "accept": cur.accept_rate if cur else None,
        "kept": cur.accepted if cur else None,
        "train rows": tr.train_rows if tr else None,
        "loss": tr.train_loss_last if tr else None,
        "challenger pass@1": ev.report.get("pass@1") if ev else None,
        "champion pass@1": gate.decision.champion if gate else None,
        "gate": gate.decision.promote if gate else None,
        **(judge_columns(cur.judge) if cur and cur.judge is not None else {}),
    }


def judge_metrics(qc: dict | None) -> dict[str, float]:
    """The judge's QC figures of one curate stage as MLflow metrics, `judge.<key>` (nested
    dicts flattened with dots; none without a judge). Text (the rubric version) and undefined
    figures (None, or NaN in older manifests) are left out: a metric is a finite number."""
    return {
        f"judge.{k}": float(v)
        for k, v in flatten(qc or {}).items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }


def hygiene_metrics(seeds: SeedsOutputs, cur: CurateOutputs) -> dict[str, float]:
    """Seeds by source, decontamination and dedup drops, reasoning paths, diversity."""
    m = {f"seeds.origin.{k}": v for k, v in seeds.origins.items()}
    m.update({f"seeds.decontaminated.{k}": v for k, v in seeds.decontaminated.items()})
    m.update({f"seeds.duplicates.{k}": v for k, v in seeds.duplicates.items()})
    if cur.reasoning_paths is not None:
        m["curate.reasoning_paths"] = cur.reasoning_paths
    for part, figures in cur.diversity.items():
        m.update({f"diversity.{part}.{k}": v for k, v in figures.items()})
    return m


HEADLINE = "headline/"
"""The prefix of the figures a generation is judged by. MLflow's chart view makes one section
per metric-name prefix before the last `/`, sections in name order ahead of the unprefixed
"Model metrics", charts in each by name: so this section leads, its charts in the order below."""


def headline_metrics(gen: Generation) -> dict[str, float | None]:
    """The generation at a glance, first in MLflow's charts: held-out pass@1 (sampled, then
    greedy), format rate, accept rate and the gate's delta. Each is also logged under its own
    name (`challenger.pass@1`, ...); these copies only order the charts."""
    report = gen.eval.report if gen.eval else {}
    figures = (
        ("pass@1", report.get("pass@1")),
        ("greedy_pass@1", report.get("greedy_pass@1")),
        ("format_rate", report.get("format_rate")),
        ("accept_rate", gen.curate.accept_rate if gen.curate else None),
        ("gate_delta", gen.gate.decision.delta if gen.gate else None),
    )
    return {f"{HEADLINE}{i}.{name}": v for i, (name, v) in enumerate(figures, 1)}


def generation_metrics(gen: Generation) -> dict[str, float | None]:
    """A completed generation's MLflow metrics (None values are not logged), the headline
    figures first (`headline_metrics`)."""
    gen.require("seeds", "generate", "curate", "train", "eval", "gate")
    seeds, cur, tr, ev, gate = gen.seeds, gen.curate, gen.train, gen.eval, gen.gate
    d = gate.decision
    return {
        **headline_metrics(gen),
        "seeds.difficulty": seeds.difficulty,
        "generate.tokens_per_s": gen.generate.tokens_per_s,
        "generate.seconds": gen.generate.seconds,
        **{f"generate.rationalize.{k}": v for k, v in gen.generate.rationalize.items()},
        "curate.accept_rate": cur.accept_rate,
        "curate.accepted": cur.accepted,
        "curate.seed_solve_rate": cur.seed_solve_rate,
        **{f"curate.{k}": v for k, v in cur.counts.items()},
        **hygiene_metrics(seeds, cur),
        "train.rows": tr.train_rows,
        "train.loss_first": tr.train_loss_first,
        "train.loss_last": tr.train_loss_last,
        "train.seconds": tr.seconds,
        # GRPO's figures (per-reward means, reward std, zero-signal share, completion length,
        # clipped ratio, KL) when this generation's recipe ran GRPO.
        **{f"train.{k}": v for k, v in tr.grpo.items()},
        **{f"challenger.{k}": v for k, v in ev.report.items()},
        **{
            f"challenger.suite.{name}.{k}": v
            for name, rep in ev.suites.items()
            for k, v in rep.items()
            if k in ("pass@1", "format_rate", "mean_tokens")
        },
        **{f"champion.{k}": v for k, v in gate.champion.report.items()},
        "gate.promoted": float(d.promote),
        "gate.delta": d.delta,
        "gate.ci_low": d.ci_low,
        **{
            f"gate.{k}.regression": v["regression"]
            for k, v in d.guards.items()
            if k.startswith("collapse.")
        },
        **judge_metrics(cur.judge),
    }


def generation_tags(gen: Generation) -> dict[str, str]:
    """A completed generation's MLflow run tags: the gate's reason and rule, the recipe."""
    gen.require("train", "gate")
    d = gen.gate.decision
    return {
        "gate.reason": d.reason,
        "gate.rule": d.rule,
        "train.mode": gen.train.mode,
        "train.stage": gen.train.label or "",
    }
