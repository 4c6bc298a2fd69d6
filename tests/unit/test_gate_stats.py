"""The paired statistical gate: calibration and power by simulation, then its rules one by one."""

import numpy as np
import pytest

from tasks.gate import DEFAULT_GUARDS, GateDecision, decide_paired

SUITE, K = 512, 8  # the demo's frozen suite and samples per item
BETA = (0.6, 3.4)  # per-item solve rates: mean 0.15, many near 0, a few easy items, like the demo


def _items(correct, formatted=None, truncated=None, tokens=None, majority=None, k=K) -> list[dict]:
    n = len(correct)
    formatted = np.full(n, k) if formatted is None else formatted
    truncated = np.zeros(n, int) if truncated is None else truncated
    tokens = np.full(n, 40.0) if tokens is None else tokens
    majority = 2 * np.asarray(correct) > k if majority is None else majority
    return [
        {
            "item_id": f"q{i:04d}",
            "difficulty": 1 + i % 3,
            "n": k,
            "correct": c,
            "formatted": f,
            "truncated": t,
            "majority_correct": bool(mj),
            "mean_tokens": m,
        }
        for i, (c, f, t, m, mj) in enumerate(
            zip(
                np.asarray(correct).tolist(),
                np.asarray(formatted).tolist(),
                np.asarray(truncated).tolist(),
                np.asarray(tokens).tolist(),
                np.asarray(majority).tolist(),
                strict=True,
            )
        )
    ]


def _promotion_rate(shift: float, trials: int, seed: int) -> float:
    """Share of simulated generations promoted when the challenger's true rates are +shift."""
    rng = np.random.default_rng(seed)
    promoted = 0
    for t in range(trials):
        rates = rng.beta(*BETA, size=SUITE)
        champ = rng.binomial(K, rates)
        chall = rng.binomial(K, np.clip(rates + shift, 0, 1))
        d = decide_paired(_items(champ), _items(chall), n_boot=1000, seed=t)
        promoted += d.promote
    return promoted / trials


def test_null_false_promotion_rate_is_at_most_alpha():
    # Same true rates, independent sampling noise: a promotion here is a false one.
    rate = _promotion_rate(0.0, trials=400, seed=11)
    print(f"false-promotion rate under the null: {rate:.3f} (alpha 0.05, 400 trials)")
    assert rate <= 0.08  # alpha plus ~3 Monte-Carlo standard errors (0.011)


def test_real_improvement_is_promoted():
    power = _promotion_rate(0.05, trials=100, seed=12)
    print(f"power at +0.05 pass@1: {power:.3f} (100 trials)")
    assert power >= 0.8


def _base(seed=0):
    rng = np.random.default_rng(seed)
    return rng.binomial(K, rng.beta(*BETA, size=SUITE))


def _better(champ, seed=1):
    """A clearly better challenger: about two more correct samples on a third of the items."""
    rng = np.random.default_rng(seed)
    return np.minimum(champ + 2 * (rng.random(SUITE) < 0.33), K)


@pytest.mark.parametrize(
    "name,challenger_kwargs,rule,promote",
    [
        ("clearly better", {}, "promote", True),
        ("tokens 1.5x", {"tokens": np.full(SUITE, 60.0)}, "guard:mean_tokens", False),
        ("tokens 1.25x is allowed", {"tokens": np.full(SUITE, 50.0)}, "promote", True),
        (
            "format drops 5 %",
            {"formatted": np.where(np.arange(SUITE) % 5 == 0, 6, 8)},
            "guard:format_rate",
            False,
        ),
        (
            "truncation rises 5 %",
            {"truncated": np.where(np.arange(SUITE) % 5 == 0, 2, 0)},
            "guard:truncation_rate",
            False,
        ),
    ],
)
def test_guards(name, challenger_kwargs, rule, promote):
    champ = _base()
    d = decide_paired(_items(champ), _items(_better(champ), **challenger_kwargs))
    assert d.ci_low > 0, name  # the accuracy gain alone would promote
    assert (d.rule, d.promote) == (rule, promote), d.reason
    if rule.startswith("guard:"):
        guard = rule.split(":")[1]
        assert not d.guards[guard]["ok"]
        assert guard in d.reason


def _maj_up_pass1_flat(format_up: bool):
    """Champion and challenger with the same correct counts (pass@1 flat); the challenger's
    majority vote is right on a third more items (maj@k up) and, if `format_up`, its format
    rate is 6.25 points higher."""
    champ = _base()
    majority = 2 * champ > K
    gained = majority | (np.arange(SUITE) % 3 == 0)
    fmt = np.where(np.arange(SUITE) % 2 == 0, 7, 8)  # 93.75 % formatted
    return (
        _items(champ, formatted=fmt, majority=majority),
        _items(champ, formatted=np.full(SUITE, K) if format_up else fmt, majority=gained),
    )


def test_tripwire_blocks_a_maj_gain_with_format_up_and_pass1_flat():
    # A legal config (margin 0): the maj@k gain alone clears its bound, so only the tripwire
    # stands between this challenger and promotion.
    champ, chall = _maj_up_pass1_flat(format_up=True)
    d = decide_paired(champ, chall, metric="maj@k")
    assert d.ci_low > 0
    assert d.tripwires == ("format_up_accuracy_flat",)
    assert (d.rule, d.promote) == ("tripwire:format_up_accuracy_flat", False)
    assert "format rate rose +0.0625" in d.reason


def test_same_maj_gain_without_the_format_jump_is_promoted():
    champ, chall = _maj_up_pass1_flat(format_up=False)
    d = decide_paired(champ, chall, metric="maj@k")
    assert (d.rule, d.promote, d.tripwires) == ("promote", True, ())


def test_tripwire_is_not_evaluated_under_pass1():
    # Under pass@1 the CI rule already refuses a challenger with a flat pass@1: the tripwire
    # could change no decision, so it is not run.
    champ, chall = _maj_up_pass1_flat(format_up=True)
    d = decide_paired(champ, chall, metric="pass@1")
    assert (d.rule, d.promote, d.tripwires) == ("ci_below_margin", False, ())


def test_margin_outside_the_config_range_is_refused():
    champ = _items(_base())
    with pytest.raises(ValueError, match="margin must lie in"):
        decide_paired(champ, champ, margin=-0.05)


def test_no_change_is_kept_on_the_ci_rule():
    champ = _base()
    d = decide_paired(_items(champ), _items(champ))
    assert (d.rule, d.promote, d.ci_low, d.ci_high) == ("ci_below_margin", False, 0.0, 0.0)
    assert "not above margin" in d.reason


def test_item_mismatch_names_missing_ids():
    champ = _items(_base())
    with pytest.raises(ValueError, match=r"items_mismatch.*q0000.*q0001") as e:
        decide_paired(champ, champ[7:])
    assert "(7)" in str(e.value) and "q0006" not in str(e.value)  # first five only


def test_determinism_and_seed():
    champ, chall = _items(_base()), _items(_better(_base()))
    a, b = (decide_paired(champ, chall, seed=3) for _ in range(2))
    c = decide_paired(champ, chall, seed=4)
    assert (a.ci_low, a.ci_high) == (b.ci_low, b.ci_high)
    assert (a.ci_low, a.ci_high) != (c.ci_low, c.ci_high)
    # Order of items does not matter: they pair by item_id.
    d = decide_paired(champ[::-1], chall, seed=3)
    assert (a.ci_low, a.ci_high) == (d.ci_low, d.ci_high)


def test_maj_metric_and_record():
    champ = _base()
    d = decide_paired(_items(champ), _items(_better(champ)), metric="maj@k")
    assert d.metric == "maj@8"
    assert d.ci_low <= d.delta <= d.ci_high
    rec = d.to_dict()
    assert set(rec["guards"]) == set(DEFAULT_GUARDS) and rec["rule"] == d.rule
    # The simple gate still builds the same record type with the new fields defaulted.
    assert GateDecision(True, "pass@1", 0.1, 0.2, 0.1, 0.0, "r").to_dict()["ci_low"] is None


def test_guards_can_be_replaced():
    champ = _base()
    chall = _items(_better(champ), tokens=np.full(SUITE, 60.0))
    assert decide_paired(_items(champ), chall, guards={}).promote
    assert decide_paired(_items(champ), chall, guards={"mean_tokens": 0.6}).promote
    with pytest.raises(ValueError, match="unknown guard"):
        decide_paired(_items(champ), chall, guards={"vibes": 0.1})


def test_a_reviewer_can_refuse_a_promotion_but_not_force_one():
    from tasks.gate import GateDecision, with_approval

    yes = GateDecision(True, "pass@1", 0.2, 0.3, 0.1, 0.0, "pass@1 0.30 vs 0.20", rule="margin")
    no = GateDecision(False, "pass@1", 0.3, 0.2, -0.1, 0.0, "pass@1 0.20 vs 0.30", rule="margin")
    refused = with_approval(yes, {"approved": False, "note": "too long"})
    assert not refused.promote and refused.rule == "approval"
    assert refused.reason.startswith("refused by reviewer: too long")
    assert with_approval(yes, {"approved": True, "note": ""}) == yes
    assert with_approval(no, {"approved": True, "note": ""}) == no
    assert with_approval(yes, None) == yes


def test_extra_suites_guard_their_pass_at_1():
    from tasks.gate import GateDecision, suite_checks, with_alarms

    champ = {"hard": {"pass@1": 0.20}, "old": {"pass@1": 0.50}}
    chall = {"hard": {"pass@1": 0.12}, "old": {"pass@1": 0.49}}
    checks = suite_checks(champ, chall, {"hard": 0.05, "old": 0.02, "new": 0.01})
    assert set(checks) == {"suite.hard", "suite.old"}  # "new": the champion never saw it
    assert not checks["suite.hard"]["ok"] and checks["suite.old"]["ok"]
    assert abs(checks["suite.hard"]["regression"] - 0.08) < 1e-12
    yes = GateDecision(True, "pass@1", 0.2, 0.3, 0.1, 0.0, "pass@1 0.30 vs 0.20", rule="margin")
    blocked = with_alarms(yes, checks)
    assert not blocked.promote and blocked.rule == "guard:suite.hard"
