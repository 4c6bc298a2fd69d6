"""The flywheel's trajectory as one PNG: where people would rather look than read.

Six panels by generation (0 is the base model): held-out pass@1 with its 95 % interval (from
the per-item scores), mean response length, the curation accept rate, the well-formed rate,
the judge against the rule verifier when curation uses the judge (balanced accuracy and Cohen's
kappa with their 95 % intervals, plain agreement beside them, and dotted lines where a constant
judge would sit), and the mean difficulty of the seed set (the curriculum). Promoted challengers
are filled markers, rejected ones hollow; a panel with nothing to show says so.
`trajectory_point` projects one loaded generation (tasks/outputs.py) onto its points.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

from tasks.judge_qc import judge_figures

if TYPE_CHECKING:
    from tasks.outputs import Generation

matplotlib.use("Agg")  # no display on servers and workers
import matplotlib.pyplot as plt  # noqa: E402


def pass1_interval(items: list[dict]) -> tuple[float, float]:
    """Mean of per-item pass@1 and the half-width of its normal 95 % interval."""
    scores = [i["correct"] / i["n"] for i in items]
    mean = sum(scores) / len(scores)
    var = sum((s - mean) ** 2 for s in scores) / max(len(scores) - 1, 1)
    return mean, 1.96 * math.sqrt(var / len(scores))


Series = tuple[str, str | None, str]
"""(point key, legend label or None, colour)."""

JUDGE_SERIES: list[Series] = [
    ("judge_agreement", "agreement", "tab:gray"),
    ("judge_balanced_accuracy", "balanced accuracy", "tab:blue"),
    ("judge_kappa", "Cohen's kappa", "tab:orange"),
]
"""The judge panel. Balanced accuracy and kappa are drawn over agreement, because agreement alone
rewards a judge that copies the majority class (a constant judge agrees as often as the rules'
majority)."""

TRAJECTORY_FILE = "trajectory.png"
"""The plot's file in the flywheel folder, redrawn after every generation."""


def trajectory_point(gen: Generation, items: list[dict]) -> dict:
    """One generation's point: its eval (`items`: the per-item scores of `items.parquet`, for
    the pass@1 interval), curation, judge, seeds and gate (None where a stage has not landed,
    as for generation 0, the base model)."""
    pass1, ci = pass1_interval(items)
    rep, cur = gen.eval.report, gen.curate
    return {
        "generation": gen.number,
        "pass1": pass1,
        "pass1_ci": ci,
        "mean_tokens": rep["mean_tokens"],
        "format_rate": rep["format_rate"],
        "accept_rate": cur.accept_rate if cur else None,
        **judge_points(cur.judge if cur else None),
        "seed_difficulty": gen.seeds.difficulty if gen.seeds else None,
        "promoted": gen.gate.decision.promote if gen.gate else None,
    }


def judge_points(qc: dict | None) -> dict:
    """The judge panel's values and intervals for one generation (None without a judge)."""
    figures = judge_figures(qc)
    out = {}
    for key, _, _ in JUDGE_SERIES:
        est = figures[key.removeprefix("judge_")]
        out[key], out[f"{key}_ci"] = est.value, (est.low, est.high)
    return out


def trajectory_png(points: list[dict], path: Path) -> Path:
    """Draw `trajectory_figure(points)` into a PNG at `path`."""
    fig = trajectory_figure(points)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def trajectory_figure(points: list[dict]) -> plt.Figure:
    """`points`: one dict per generation with generation, pass1, pass1_ci, mean_tokens,
    format_rate, and, None for the base or when absent, accept_rate, seed_difficulty, promoted
    and the judge's figures (`JUDGE_SERIES` keys, each with an optional `<key>_ci` = (low,
    high)). Points from older runs may lack any optional key."""
    fig, axes = plt.subplots(2, 3, figsize=(14, 7), sharex=True)
    gens = [p["generation"] for p in points]
    panels: list[tuple[object, list[Series], str]] = [
        (axes[0][0], [("pass1", None, "tab:blue")], "held-out pass@1"),
        (axes[0][1], [("mean_tokens", None, "tab:blue")], "mean response length (tokens)"),
        (axes[0][2], [("format_rate", None, "tab:blue")], "well-formed rate"),
        (axes[1][0], [("accept_rate", None, "tab:blue")], "curation accept rate"),
        (axes[1][1], JUDGE_SERIES, "judge vs rules (dotted: a constant judge)"),
        (axes[1][2], [("seed_difficulty", None, "tab:blue")], "mean seed difficulty"),
    ]
    for ax, series, title in panels:
        drawn = sum(_draw_series(ax, points, s) for s in series)
        if not drawn:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
        elif series is JUDGE_SERIES:
            # What a judge that always says the same thing scores: the bar to clear.
            ax.axhline(0.5, color="tab:blue", linestyle=":", linewidth=1)
            ax.axhline(0.0, color="tab:orange", linestyle=":", linewidth=1)
            ax.legend(fontsize=8, loc="best")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("generation (0 = base)")
        ax.set_xticks(gens)
    fig.suptitle("flywheel trajectory (hollow: challenger rejected by the gate)")
    fig.tight_layout()
    return fig


def _draw_series(ax, points: list[dict], series: Series) -> bool:
    """One line with its interval bars and a marker per generation (hollow: rejected by the
    gate). Returns whether anything was measured."""
    key, label, colour = series
    shown = [p for p in points if p.get(key) is not None]
    if not shown:
        return False
    xs, ys = [p["generation"] for p in shown], [p[key] for p in shown]
    ax.plot(xs, ys, color=colour, linewidth=1.5, label=label)
    lower, upper = zip(*(_error(p, key) for p in shown), strict=True)
    if any(lower) or any(upper):
        ax.errorbar(xs, ys, yerr=[lower, upper], fmt="none", ecolor=colour, capsize=4)
    for p in shown:
        hollow = p.get("promoted") is False
        ax.plot(p["generation"], p[key], "o", color=colour, mfc="white" if hollow else colour)
    return True


def _error(point: dict, key: str) -> tuple[float, float]:
    """Distances from the point to its interval: `<key>_ci` is a half-width or (low, high);
    missing or undefined bounds draw no bar."""
    ci, value = point.get(f"{key}_ci"), point[key]
    if ci is None:
        return 0.0, 0.0
    if isinstance(ci, int | float):
        return float(ci), float(ci)
    low, high = ci
    # max(0, ...): float dust must not make matplotlib refuse a bar
    return max(0.0, 0.0 if low is None else value - low), max(
        0.0, 0.0 if high is None else high - value
    )
