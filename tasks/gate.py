"""The promotion gate: does the challenger replace the champion? Pure; no I/O.

Two tests share one decision record. `decide_paired` (the default, `gate.test:
paired_bootstrap`) is the statistical gate: both models are scored on the same frozen items with
the same sampling settings, so items pair up, and the gate bootstraps the mean per-item
difference (challenger - champion) and promotes only when its one-sided lower bound clears the
margin. `decide` (`gate.test: margin`, opt-in) compares two point estimates: with margin 0 it
promotes a challenger that is no better about half the time (`bench/bench_gate_null.py`).
`decide_test` runs whichever test a config names on two evals' items.

Departures from the textbook paired test, and why:
- The bootstrap resamples items, not samples: the k samples of one item are correlated, the
  items are (close to) independent draws from the task distribution.
- Passing the accuracy bound is not enough. Guards block a challenger that buys accuracy with
  worse behaviour (dropped format, longer or truncated answers). Guards compare pooled point
  estimates: over suite x k samples they are precise enough, and a guard is a limit, not a
  hypothesis.
- The greedy guard (`greedy_check`) is the exception: greedy pass@1 is one 0/1 result per item,
  too noisy for a point limit alone, so it blocks only a drop that is both past its tolerance
  and real (the paired bootstrap upper bound of the change is below 0).
- The tripwire "format up, accuracy flat" runs only when the gate metric is pass@k or maj@k: a
  gain there with no pass@1 gain and a format jump looks like the policy learned the format
  reward. Under pass@1 the confidence rule already refuses such a challenger, so the tripwire
  could change no decision there and is not evaluated.
- Rule precedence is tripwire > guard > CI: `rule` names the most specific alarm that fired.
- Two evals recorded under different sampling settings are not compared at all
  (`check_comparable`): their per-item results do not pair.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np

from tasks.metrics import pass_at_k


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    metric: str
    champion: float
    challenger: float
    delta: float
    margin: float
    reason: str
    # Set by decide_paired; the simple gate leaves the CI empty.
    ci_low: float | None = None
    ci_high: float | None = None
    rule: str = ""
    guards: dict[str, dict] = field(default_factory=dict)
    tripwires: tuple[str, ...] = ()
    # What the decision could not check and why (e.g. a guard skipped for missing results).
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return asdict(self)


def metric_key(metric: str, k: int) -> str:
    """Config names pass@k / maj@k generically; reports carry the actual k."""
    return metric.replace("@k", f"@{k}")


def decide(
    champion: dict[str, float], challenger: dict[str, float], metric: str, margin: float, k: int
) -> GateDecision:
    key = metric_key(metric, k)
    for name, rep in (("champion", champion), ("challenger", challenger)):
        if key not in rep:
            raise KeyError(f"{name} report has no {key!r}; it has {sorted(rep)}")
    a, b = champion[key], challenger[key]
    delta = b - a
    promote = delta > margin
    reason = (
        f"{key} {b:.4f} beats champion {a:.4f} by {delta:+.4f} > margin {margin:.4f}"
        if promote
        else f"{key} {b:.4f} vs champion {a:.4f}: {delta:+.4f} is not above margin {margin:.4f}"
    )
    rule = "promote" if promote else "delta_below_margin"
    return GateDecision(promote, key, a, b, delta, margin, reason, rule=rule)


# Guard name -> the largest allowed regression: format_rate may drop by at most 0.02 (absolute),
# mean_tokens may grow by at most 25 % (relative), truncation_rate may rise by at most 0.02.
DEFAULT_GUARDS: dict[str, float] = {
    "format_rate": 0.02,
    "mean_tokens": 0.25,
    "truncation_rate": 0.02,
}

# A rise in format rate above this while the pass@1 lower bound is <= 0 looks like the policy
# learned the format reward, not the task (checked when the gate metric is pass@k or maj@k).
FORMAT_UP_TRIPWIRE = 0.05

# The greedy guard's name in `GateDecision.guards`, and the eval report's metric of the same name.
GREEDY = "greedy_pass@1"

# The arguments of `decide_test`, by their `gate.*` config names.
TEST_ARGS = ("test", "metric", "margin", "alpha", "n_boot", "seed", "guards")

_EPS = 1e-12  # so that a regression of exactly the limit passes despite float rounding
_BOOT_CHUNK = 1 << 22  # resampled indices held at once (~16 MB as int32)


def _item_scores(items: list[dict], metric: str) -> np.ndarray:
    """Per-item score for the gate's metric: pass@1 = correct/n, maj@k = majority_correct."""
    if metric == "pass@1":
        return np.array([i["correct"] / i["n"] for i in items], dtype=float)
    kind, _, k = metric.partition("@")
    if kind == "maj" and (k == "k" or k.isdigit()):
        return np.array([float(i["majority_correct"]) for i in items])
    if kind == "pass" and (k == "k" or k.isdigit()):
        return np.array(
            [
                pass_at_k(i["n"], i["correct"], i["n"] if k == "k" else min(int(k), i["n"]))
                for i in items
            ],
            dtype=float,
        )
    raise ValueError(f"unknown gate metric {metric!r}; use pass@1, pass@k or maj@k")


def _pooled(items: list[dict]) -> dict[str, float]:
    """Suite figures the guards watch, pooled over samples exactly as metrics.report does."""
    total = sum(i["n"] for i in items)
    return {
        "format_rate": sum(i["formatted"] for i in items) / total,
        "truncation_rate": sum(i["truncated"] for i in items) / total,
        "mean_tokens": sum(i["mean_tokens"] * i["n"] for i in items) / total,
    }


def _regression(name: str, champ: float, chall: float) -> float:
    """How much worse the challenger is on one guard, in that guard's unit (positive = worse)."""
    if name == "format_rate":
        return champ - chall
    if name == "truncation_rate":
        return chall - champ
    if name == "mean_tokens":
        if champ <= 0:
            return 0.0 if chall <= 0 else float("inf")
        return chall / champ - 1.0
    raise AssertionError(name)  # names are checked against DEFAULT_GUARDS up front


def _pair(champion_items: list[dict], challenger_items: list[dict]) -> list[tuple[dict, dict]]:
    maps = []
    for name, items in (("champion", champion_items), ("challenger", challenger_items)):
        m = {i["item_id"]: i for i in items}
        if len(m) != len(items):
            raise ValueError(f"{name} items repeat an item_id")
        if any(i["n"] <= 0 for i in items):
            raise ValueError(f"{name} items include one with n <= 0")
        maps.append(m)
    a, b = maps
    if a.keys() != b.keys():
        only_a, only_b = sorted(a.keys() - b.keys()), sorted(b.keys() - a.keys())
        raise ValueError(
            "items_mismatch: the two evaluations scored different items; "
            f"missing from challenger ({len(only_a)}): {only_a[:5]}, "
            f"missing from champion ({len(only_b)}): {only_b[:5]}"
        )
    if not a:
        raise ValueError("cannot gate on an empty evaluation")
    return [(a[key], b[key]) for key in sorted(a)]


def paired_bootstrap(
    diffs: np.ndarray, *, n_boot: int, alpha: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(alpha, 1 - alpha) quantiles of the bootstrapped mean of each row of `diffs`.

    `diffs` is (metrics, items); every row is resampled with the same item indices, so the
    rows' bounds come from one bootstrap. Seeded: the same inputs give the same bounds.
    """
    diffs = np.atleast_2d(np.asarray(diffs, dtype=float))
    n = diffs.shape[1]
    rng = np.random.default_rng(seed)
    means = np.empty((diffs.shape[0], n_boot))
    step = max(1, _BOOT_CHUNK // n)
    for start in range(0, n_boot, step):
        stop = min(n_boot, start + step)
        idx = rng.integers(0, n, size=(stop - start, n), dtype=np.int32)
        means[:, start:stop] = diffs[:, idx].mean(axis=-1)
    return np.quantile(means, alpha, axis=1), np.quantile(means, 1.0 - alpha, axis=1)


def decide_paired(
    champion_items: list[dict],
    challenger_items: list[dict],
    *,
    metric: str = "pass@1",
    margin: float = 0.0,
    alpha: float = 0.05,
    n_boot: int = 2000,
    seed: int = 0,
    guards: dict[str, float] | None = None,
) -> GateDecision:
    """Promote when the paired bootstrap lower bound of the mean gain beats `margin`
    and no guard regresses and no tripwire fires.

    Items are dicts with the `ItemResult` fields (rows of an eval's items.parquet), paired by
    item_id; differing item sets raise ValueError. `guards` maps a guard name to its limit;
    None means DEFAULT_GUARDS, a dict replaces them ({} turns guards off). `margin` lies in
    [0, 1], as `gate.margin` does: a negative one would promote a challenger known to be worse.
    """
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must lie in (0, 0.5), got {alpha}")
    if not 0 <= margin <= 1:
        raise ValueError(f"margin must lie in [0, 1], got {margin}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be positive, got {n_boot}")
    limits = DEFAULT_GUARDS if guards is None else guards
    unknown = sorted(set(limits) - set(DEFAULT_GUARDS))
    if unknown:
        raise ValueError(f"unknown guard(s) {unknown}; known: {sorted(DEFAULT_GUARDS)}")
    pairs = _pair(champion_items, challenger_items)
    champ = [a for a, _ in pairs]
    chall = [b for _, b in pairs]
    ks = {i["n"] for i in champ}
    key = metric_key(metric, ks.pop()) if len(ks) == 1 else metric

    rows = [_item_scores(chall, metric) - _item_scores(champ, metric)]
    tripwired = metric != "pass@1"  # under pass@1 the CI rule already refuses what it would
    if tripwired:  # the tripwire reads the pass@1 bound
        rows.append(_item_scores(chall, "pass@1") - _item_scores(champ, "pass@1"))
    lows, highs = paired_bootstrap(np.stack(rows), n_boot=n_boot, alpha=alpha, seed=seed)
    ci_low, ci_high = float(lows[0]), float(highs[0])
    pass1_low = float(lows[-1])
    a_score = float(_item_scores(champ, metric).mean())
    b_score = float(_item_scores(chall, metric).mean())
    delta = b_score - a_score

    pa, pb = _pooled(champ), _pooled(chall)
    guard_results = {}
    for name, limit in limits.items():
        worse = _regression(name, pa[name], pb[name])
        guard_results[name] = {
            "champion": pa[name],
            "challenger": pb[name],
            "regression": worse,
            "limit": float(limit),
            "ok": bool(worse <= limit + _EPS),
        }
    format_rise = pb["format_rate"] - pa["format_rate"]
    tripwires = []
    if tripwired and format_rise > FORMAT_UP_TRIPWIRE and pass1_low <= 0:
        tripwires.append("format_up_accuracy_flat")

    level = f"{1 - alpha:.0%} lower bound"
    head = (
        f"{key} {a_score:.4f} -> {b_score:.4f} (delta {delta:+.4f} over {len(pairs)} paired items"
    )
    stats, bound = f"{head})", f"{head}, {level} {ci_low:+.4f})"
    failed = [n for n, g in guard_results.items() if not g["ok"]]
    if tripwires:
        rule = f"tripwire:{tripwires[0]}"
        reason = (
            f"blocked by tripwire format_up_accuracy_flat: format rate rose {format_rise:+.4f} "
            f"(> {FORMAT_UP_TRIPWIRE}) while the pass@1 {level} {pass1_low:+.4f} is <= 0; {bound}"
        )
    elif failed:
        name, g = failed[0], guard_results[failed[0]]
        unit = "relative" if name == "mean_tokens" else "absolute"
        rule = f"guard:{name}"
        reason = (
            f"blocked by guard {name}: {g['champion']:.4f} -> {g['challenger']:.4f} is a "
            f"regression of {g['regression']:+.4f} ({unit}) over the limit {g['limit']:.4f}; "
            f"{bound}"
        )
        if len(failed) > 1:
            reason += f"; other failed guards: {', '.join(failed[1:])}"
    elif ci_low <= margin:
        rule = "ci_below_margin"
        reason = f"kept champion: {level} {ci_low:+.4f} is not above margin {margin:.4f}; {stats}"
    else:
        rule = "promote"
        reason = f"promoted: {level} {ci_low:+.4f} is above margin {margin:.4f}; {stats}; guards ok"
    return GateDecision(
        promote=rule == "promote",
        metric=key,
        champion=a_score,
        challenger=b_score,
        delta=delta,
        margin=margin,
        reason=reason,
        ci_low=ci_low,
        ci_high=ci_high,
        rule=rule,
        guards=guard_results,
        tripwires=tuple(tripwires),
    )


def decide_test(
    champion_items: list[dict],
    challenger_items: list[dict],
    *,
    test: str,
    metric: str,
    margin: float,
    alpha: float,
    n_boot: int,
    seed: int,
    guards: dict[str, float] | None,
) -> GateDecision:
    """The test a config names (`gate.test`, arguments named as in `TEST_ARGS`) on two evals'
    items: the stage and the null benchmark decide through this one function."""
    if test == "paired_bootstrap":
        return decide_paired(
            champion_items,
            challenger_items,
            metric=metric,
            margin=margin,
            alpha=alpha,
            n_boot=n_boot,
            seed=seed,
            guards=guards,
        )
    if test != "margin":
        raise ValueError(f"unknown gate test {test!r}; use paired_bootstrap or margin")
    pairs = _pair(champion_items, challenger_items)
    ks = {a["n"] for a, _ in pairs}
    if len(ks) != 1:
        raise ValueError(f"the margin test needs one k over all items, got {sorted(ks)}")
    k = ks.pop()
    key = metric_key(metric, k)

    def summary(items: list[dict]) -> dict[str, float]:
        return {key: float(_item_scores(items, metric).mean())}

    return decide(summary([a for a, _ in pairs]), summary([b for _, b in pairs]), metric, margin, k)


# Worker sampling parameter -> the config field it comes from, for errors a user can act on.
_SETTING_FIELDS = {
    "n": "eval.k",
    "temperature": "eval.temperature",
    "top_p": "top_p",
    "max_tokens": "eval.max_tokens",
    "seed": "eval.seed",
}


def check_comparable(champion: dict, challenger: dict, where: str = "") -> None:
    """Raise ValueError when two evals' recorded sampling parameters (the eval manifest's
    `params`) differ: per-item results sampled differently do not pair, and a gate over them
    would measure the settings change, not the model."""
    diffs = [
        f"{_SETTING_FIELDS.get(k, k)}: champion {champion.get(k)!r}, "
        f"challenger {challenger.get(k)!r}"
        for k in sorted(champion.keys() | challenger.keys())
        if champion.get(k) != challenger.get(k)
    ]
    if diffs:
        raise ValueError(
            f"eval_settings_mismatch{' ' + where if where else ''}: the two evaluations were "
            f"sampled with different settings ({'; '.join(diffs)}); the gate compares only evals "
            "made with the frozen eval settings"
        )


def greedy_check(
    champion: list[dict] | None,
    challenger: list[dict] | None,
    *,
    tolerance: float,
    alpha: float,
    n_boot: int,
    seed: int,
) -> tuple[dict[str, dict], str | None]:
    """The greedy pass@1 guard: (alarms for `with_alarms`, a note when it cannot run).

    Items are the greedy eval's `ItemResult` rows (one sample at temperature 0 per item),
    paired by item_id. The guard fails when greedy pass@1 falls by more than `tolerance` AND the
    paired bootstrap (1 - alpha) upper bound of (challenger - champion) is below 0: the drop must
    be both material and real. Greedy answers are one coin per item: on 512 items a point limit
    alone blocked 29 of 200 equally good challengers in simulation, this rule 8 of 200
    (tests/unit/test_greedy_guard.py). An eval without greedy results (recorded before them, or
    with `eval.greedy` off) skips the guard.
    """
    missing = [n for n, items in (("champion", champion), ("challenger", challenger)) if not items]
    if missing:
        return {}, (
            f"{GREEDY} guard skipped: the {' and '.join(missing)} eval has no greedy results "
            "(made before greedy evaluation was recorded, or with eval.greedy off)"
        )
    pairs = _pair(champion, challenger)
    a = _item_scores([x for x, _ in pairs], "pass@1")
    b = _item_scores([y for _, y in pairs], "pass@1")
    _, high = paired_bootstrap(b - a, n_boot=n_boot, alpha=alpha, seed=seed)
    ref, cur, upper = float(a.mean()), float(b.mean()), float(high[0])
    drop = ref - cur
    ok = not (drop > tolerance + _EPS and upper < 0)
    return {
        GREEDY: {
            "champion": ref,
            "challenger": cur,
            "regression": drop,
            "limit": float(tolerance),
            "ci_high": upper,
            "ok": bool(ok),
            "reason": f"{GREEDY} fell {drop:+.4f} ({ref:.4f} -> {cur:.4f}) over the tolerance "
            f"{tolerance:.4f}, and the {1 - alpha:.0%} upper bound of the change {upper:+.4f} "
            "is below 0",
        }
    }, None


def suite_greedy_checks(
    champion: dict[str, list[dict] | None],
    challenger: dict[str, list[dict] | None],
    *,
    tolerance: float,
    alpha: float,
    n_boot: int,
    seed: int,
) -> tuple[dict[str, dict], list[str]]:
    """The greedy guard (`greedy_check`) on each named extra suite's greedy items, as alarms
    `suite.<name>.greedy_pass@1` for `with_alarms`, and a note per suite it could not check."""
    alarms, notes = {}, []
    for name in sorted(champion):
        checks, note = greedy_check(
            champion[name],
            challenger.get(name),
            tolerance=tolerance,
            alpha=alpha,
            n_boot=n_boot,
            seed=seed,
        )
        if note:
            notes.append(f"suite {name}: {note}")
        for key, record in checks.items():
            alarms[f"suite.{name}.{key}"] = {
                **record,
                "reason": f"suite {name}: {record['reason']}",
            }
    return alarms, notes


def with_note(decision: GateDecision, note: str | None) -> GateDecision:
    """The decision with `note` recorded (in `notes` and at the end of the reason)."""
    if not note:
        return decision
    return replace(decision, notes=(*decision.notes, note), reason=f"{decision.reason}; {note}")


def with_alarms(decision: GateDecision, alarms: dict[str, dict]) -> GateDecision:
    """The decision with promotion blocked when an outside alarm fired.

    `alarms` maps a guard name (e.g. `collapse.distinct_2`) to a guard record with the keys of
    `GateDecision.guards` plus `reason`; all of them join `guards`, and the first one that is not
    ok blocks a promotion (a gate that already said no keeps its own rule and reason).
    """
    guards = {
        **decision.guards,
        **{k: {x: v[x] for x in v if x != "reason"} for k, v in alarms.items()},
    }
    fired = [k for k, v in alarms.items() if not v["ok"]]
    if not fired or not decision.promote:
        return replace(decision, guards=guards)
    first = alarms[fired[0]]
    return replace(
        decision,
        promote=False,
        rule=f"guard:{fired[0]}",
        reason=f"blocked by guard {fired[0]}: {first['reason']}; without it: {decision.reason}",
        guards=guards,
    )


def with_approval(decision: GateDecision, approval: dict | None) -> GateDecision:
    """The decision after a person's review (`gate.approval`): a refusal blocks a promotion the
    test allowed; an approval changes nothing (a person cannot promote what the test refused)."""
    if approval is None or not decision.promote or approval["approved"]:
        return decision
    note = f": {approval['note']}" if approval.get("note") else ""
    return replace(
        decision,
        promote=False,
        rule="approval",
        reason=f"refused by reviewer{note}; the test alone said: {decision.reason}",
    )


def suite_checks(
    champion: dict[str, dict], challenger: dict[str, dict], max_drop: dict[str, float]
) -> dict[str, dict]:
    """One guard record per extra suite (`suite.<name>`): the pass@1 drop against the champion
    and whether it stays within `max_drop`. A suite the champion was never scored on (it was
    evaluated before the suite existed) is skipped, not failed."""
    out = {}
    for name, limit in max_drop.items():
        if name not in champion or name not in challenger:
            continue
        ref, cur = champion[name]["pass@1"], challenger[name]["pass@1"]
        drop = ref - cur
        out[f"suite.{name}"] = {
            "champion": ref,
            "challenger": cur,
            "regression": drop,
            "limit": limit,
            "ok": drop <= limit,
            "reason": f"suite {name} pass@1 fell {drop:+.4f} ({ref:.4f} -> {cur:.4f}), "
            f"limit {limit:.4f}",
        }
    return out
