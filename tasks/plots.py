"""The flywheel's trajectory as one PNG: where people would rather look than read.

Six panels by generation (0 is the base model): held-out pass@1 with its 95 % interval (from
the per-item scores), mean response length, the curation accept rate, the well-formed rate,
the judge's agreement with the rule verifier (when curation uses the judge), and the mean
difficulty of the seed set (the curriculum). Promoted challengers are filled markers, rejected
ones hollow; a panel with nothing to show says so.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and workers
import matplotlib.pyplot as plt  # noqa: E402


def pass1_interval(items: list[dict]) -> tuple[float, float]:
    """Mean of per-item pass@1 and the half-width of its normal 95 % interval."""
    scores = [i["correct"] / i["n"] for i in items]
    mean = sum(scores) / len(scores)
    var = sum((s - mean) ** 2 for s in scores) / max(len(scores) - 1, 1)
    return mean, 1.96 * math.sqrt(var / len(scores))


def trajectory_png(points: list[dict], path: Path) -> Path:
    """`points`: one dict per generation with generation, pass1, pass1_ci, mean_tokens,
    format_rate, and, None for the base or when absent, accept_rate, judge_agreement,
    seed_difficulty and promoted."""
    fig, axes = plt.subplots(2, 3, figsize=(14, 7), sharex=True)
    gens = [p["generation"] for p in points]
    panels = [
        (axes[0][0], "pass1", "held-out pass@1"),
        (axes[0][1], "mean_tokens", "mean response length (tokens)"),
        (axes[0][2], "format_rate", "well-formed rate"),
        (axes[1][0], "accept_rate", "curation accept rate"),
        (axes[1][1], "judge_agreement", "judge agreement with the rules"),
        (axes[1][2], "seed_difficulty", "mean seed difficulty"),
    ]
    for ax, key, title in panels:
        xs = [g for g, p in zip(gens, points, strict=True) if p.get(key) is not None]
        ys = [p[key] for p in points if p.get(key) is not None]
        if not ys:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
        ax.plot(xs, ys, color="tab:blue", linewidth=1.5)
        if key == "pass1":
            ax.errorbar(
                xs,
                ys,
                yerr=[p["pass1_ci"] for p in points],
                fmt="none",
                ecolor="tab:blue",
                capsize=4,
            )
        for p in points:
            if p.get(key) is None:
                continue
            hollow = p.get("promoted") is False
            ax.plot(
                p["generation"],
                p[key],
                "o",
                color="tab:blue",
                markerfacecolor="white" if hollow else "tab:blue",
            )
        ax.set_title(title)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("generation (0 = base)")
        ax.set_xticks(gens)
    fig.suptitle("flywheel trajectory (hollow: challenger rejected by the gate)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
