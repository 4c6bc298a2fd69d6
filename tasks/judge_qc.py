"""Judge quality control: how far the judge can be trusted, measured against the rule verifier.

Pure: no torch, vLLM, Prefect, MLflow or pyarrow here. The curate stage calls `qc_metrics` on
one generation's votes and rule verdicts and stores the dict in its manifest; MLflow metrics,
summary rows and the trajectory plot are projections of that dict (`judge_figures`).

Where this departs from the usual "agreement with the reference":

- Plain agreement hides a judge worse than a constant. When the rules accept 4.7 % of the
  policy's own candidates, a judge that always says "reject" agrees 0.95. Curation needs the
  two errors apart, each over its own class: the false-accept rate (the judge accepts what the
  rules reject: wrong samples would enter training) and the false-reject rate (the judge rejects
  what the rules accept: good samples are lost). Balanced accuracy (the mean of the two
  per-class hit rates) and Cohen's kappa (agreement beyond chance) put a constant judge at 0.5
  and 0 whatever the class balance. `agreement` stays, for continuity.
- Every figure carries a 95 % interval and the counts it rests on, so a small comparison does
  not pass for a measurement. Rates use Wilson's score interval (sound at 0 and at 1, where the
  normal interval collapses). Balanced accuracy uses Newcombe's MOVER combination of the two
  per-class Wilson intervals (closed form, deterministic, never outside [0, 1]; the delta method
  collapses to a zero-width interval when a class rate is 0 or 1). Kappa uses the large-sample
  delta-method variance of Fleiss, Cohen and Everitt (1969).
- QC need not judge every candidate. Where the rules decide a verdict, the judge's vote there only
  measures the judge, so `qc_selection` keeps every candidate the judge decides and a seeded,
  fixed-size simple random draw of the rest (`judge.qc_sample`); the figures are computed on the
  judged candidates only and their intervals widen with the smaller count, as they should (no
  finite-population correction: the interval is conservative when the draw is a large share).
- A figure that is undefined is None, never NaN or 0: no rule accepts (or none rejects) leaves the
  per-class rates and balanced accuracy undefined; kappa is undefined only when chance agreement
  is 1 (both sides constant and equal).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from statistics import NormalDist
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # a type only: tasks.judge re-exports `qc_metrics` from here
    from tasks.judge import JudgeVote
    from tasks.records import Verdict

Z95 = NormalDist().inv_cdf(0.975)
"""The two-sided 95 % normal quantile (1.959963...)."""

JUDGE_COLUMNS = {
    "judge agree": "agreement",
    "judge bal.acc": "balanced_accuracy",
    "judge kappa": "kappa",
}
"""Summary-table columns (label -> figure): balanced accuracy and kappa beside agreement, which
alone rates a constant judge as high as the rules' majority class."""


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its 95 % interval; all three None when the figure is undefined."""

    value: float | None
    low: float | None = None
    high: float | None = None


UNDEFINED = Estimate(None)


@dataclass(frozen=True)
class Confusion:
    """Judge against rules on the candidates both decided (accept is the positive class and the
    rules are the reference)."""

    both_accept: int
    judge_only_accept: int
    rules_only_accept: int
    both_reject: int

    @property
    def compared(self) -> int:
        return self.both_accept + self.judge_only_accept + self.rules_only_accept + self.both_reject

    @property
    def rules_accepts(self) -> int:
        return self.both_accept + self.rules_only_accept

    @property
    def rules_rejects(self) -> int:
        return self.both_reject + self.judge_only_accept


_CELL = {  # (judge accepts, rules accept) -> cell
    (True, True): "both_accept",
    (True, False): "judge_only_accept",
    (False, True): "rules_only_accept",
    (False, False): "both_reject",
}


def confusion(votes: list[JudgeVote], rules: list[Verdict | None]) -> Confusion:
    """Count the four cells. A candidate without a rule verdict (None), or with an infra_error on
    either side, is left out: an infrastructure failure says nothing about the judge."""
    cells = dict.fromkeys(_CELL.values(), 0)
    for v, r in zip(votes, rules, strict=True):
        if r is None or r.outcome == "infra_error" or v.outcome == "infra_error":
            continue
        cells[_CELL[v.outcome == "accept", r.outcome == "accept"]] += 1
    return Confusion(**cells)


# ---------------------------------------------------------------------------------------------
# Figures with intervals


def wilson(k: int, n: int, z: float = Z95) -> Estimate:
    """k successes out of n with Wilson's score interval; undefined for n = 0."""
    if n <= 0:
        return UNDEFINED
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # Clamp float dust so the interval always holds the point (at p = 0 or 1 it touches it).
    return Estimate(p, min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half)))


def agreement(c: Confusion) -> Estimate:
    """Share of compared candidates where judge and rules gave the same verdict."""
    return wilson(c.both_accept + c.both_reject, c.compared)


def false_accept_rate(c: Confusion) -> Estimate:
    """Among the candidates the rules reject, the share the judge accepts."""
    return wilson(c.judge_only_accept, c.rules_rejects)


def false_reject_rate(c: Confusion) -> Estimate:
    """Among the candidates the rules accept, the share the judge rejects."""
    return wilson(c.rules_only_accept, c.rules_accepts)


def balanced_accuracy(c: Confusion) -> Estimate:
    """Mean of the per-class hit rates, (TPR + TNR) / 2, with Newcombe's MOVER interval built
    from the two Wilson intervals (the classes are independent samples). Undefined unless the
    rules both accept and reject something."""
    hit_acc = wilson(c.both_accept, c.rules_accepts)
    hit_rej = wilson(c.both_reject, c.rules_rejects)
    if hit_acc.value is None or hit_rej.value is None:
        return UNDEFINED
    p1, p2 = hit_acc.value, hit_rej.value
    low = (p1 + p2) - math.hypot(p1 - hit_acc.low, p2 - hit_rej.low)
    high = (p1 + p2) + math.hypot(hit_acc.high - p1, hit_rej.high - p2)
    return Estimate((p1 + p2) / 2, low / 2, high / 2)


def kappa(c: Confusion, z: float = Z95) -> Estimate:
    """Cohen's kappa, (p_o - p_e) / (1 - p_e), with the Fleiss-Cohen-Everitt (1969) large-sample
    variance. A constant judge gets 0, with a zero-width interval: any table it produces has
    kappa 0. Undefined when nothing was compared or p_e = 1."""
    n = c.compared
    if n == 0:
        return UNDEFINED
    # rows: rules (accept, reject); columns: judge (accept, reject)
    p = [
        [c.both_accept / n, c.rules_only_accept / n],
        [c.judge_only_accept / n, c.both_reject / n],
    ]
    row = [p[0][0] + p[0][1], p[1][0] + p[1][1]]
    col = [p[0][0] + p[1][0], p[0][1] + p[1][1]]
    p_o = p[0][0] + p[1][1]
    p_e = row[0] * col[0] + row[1] * col[1]
    if p_e >= 1.0:
        return UNDEFINED
    k = (p_o - p_e) / (1 - p_e)
    diag = sum(p[i][i] * (1 - (row[i] + col[i]) * (1 - k)) ** 2 for i in (0, 1))
    off = (1 - k) ** 2 * sum(p[i][j] * (col[i] + row[j]) ** 2 for i, j in ((0, 1), (1, 0)))
    var = max(0.0, (diag + off - (k - p_e * (1 - k)) ** 2) / ((1 - p_e) ** 2 * n))
    half = z * math.sqrt(var)
    return Estimate(k, max(-1.0, k - half), min(1.0, k + half))


FIGURES = {  # name -> figure, in the order reports show them
    "agreement": agreement,
    "balanced_accuracy": balanced_accuracy,
    "kappa": kappa,
    "false_accept_rate": false_accept_rate,
    "false_reject_rate": false_reject_rate,
}


# ---------------------------------------------------------------------------------------------
# Which candidates the judge sees


def qc_selection(decides: list[bool], qc_sample: int | None, seed: int) -> list[int]:
    """Indices of the candidates to judge, ascending: every one whose verdict the judge decides
    (`decides[i]`), plus a random draw of `qc_sample` of the others, for QC only (all of them
    when `qc_sample` is None or not smaller). The draw depends on `seed` alone, so a rerun judges
    the same candidates."""
    decided = [i for i, d in enumerate(decides) if d]
    rest = [i for i, d in enumerate(decides) if not d]
    if qc_sample is not None and qc_sample < len(rest):
        rest = random.Random(f"judge-qc/{seed}").sample(rest, qc_sample)
    return sorted(decided + rest)


# ---------------------------------------------------------------------------------------------
# The per-generation QC record and its projections


def qc_metrics(votes: list[JudgeVote], rules: list[Verdict | None]) -> dict[str, float | None]:
    """Per-generation judge QC: vote counts, mean margin, the confusion table against the rules
    and every figure of `FIGURES` as `<name>`, `<name>.low`, `<name>.high` (None if undefined).

    Counts behind the rates: `false_accept_rate` = `confusion.judge_only_accept` /
    `rules_rejects`, `false_reject_rate` = `confusion.rules_only_accept` / `rules_accepts`. The
    dict is flat and open: the curate stage merges its own keys (engine stats, cuts) into it.
    """
    n = len(votes)
    c = confusion(votes, rules)
    out: dict[str, float | None] = {
        "candidates": n,
        "votes": sum(v.accepts + v.rejects + v.errors for v in votes),
        "vote_errors": sum(v.errors for v in votes),
        "infra_errors": sum(v.outcome == "infra_error" for v in votes),
        "accepts": sum(v.outcome == "accept" for v in votes),
        "mean_margin": sum(v.margin for v in votes) / n if n else 0.0,
        "confusion.both_accept": c.both_accept,
        "confusion.both_reject": c.both_reject,
        "confusion.judge_only_accept": c.judge_only_accept,
        "confusion.rules_only_accept": c.rules_only_accept,
        "compared": c.compared,
        "rules_accepts": c.rules_accepts,
        "rules_rejects": c.rules_rejects,
    }
    for name, figure in FIGURES.items():
        est = figure(c)
        out.update({name: est.value, f"{name}.low": est.low, f"{name}.high": est.high})
    return out


def _number(v: object) -> float | None:
    """A finite number, else None (older manifests stored an undefined agreement as NaN)."""
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


def judge_figures(qc: dict | None) -> dict[str, Estimate]:
    """The `FIGURES` of a curate manifest's judge dict, for tables and plots. A manifest
    written before a figure existed (or without a judge) gives UNDEFINED for it, never an error."""
    qc = qc or {}
    return {
        name: Estimate(
            _number(qc.get(name)), _number(qc.get(f"{name}.low")), _number(qc.get(f"{name}.high"))
        )
        for name in FIGURES
    }
