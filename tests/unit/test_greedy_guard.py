"""The greedy pass@1 guard: a challenger whose sampled pass@1 rises but whose greedy accuracy
falls for real is refused; noise and old evals without greedy results are not."""

import numpy as np
import pytest

from tasks.gate import GREEDY, decide_paired, greedy_check, with_alarms, with_note

SUITE, K = 512, 8
ARGS = {"tolerance": 0.02, "alpha": 0.05, "n_boot": 2000, "seed": 0}


def _items(correct, k: int) -> list[dict]:
    return [
        {
            "item_id": f"q{i:04d}",
            "difficulty": 1,
            "n": k,
            "correct": int(c),
            "formatted": k,
            "truncated": 0,
            "majority_correct": 2 * int(c) > k,
            "mean_tokens": 40.0,
        }
        for i, c in enumerate(np.asarray(correct).tolist())
    ]


def _greedy(right: np.ndarray) -> list[dict]:
    return _items(right.astype(int), 1)


def _flips(base: np.ndarray, lost: int, won: int) -> np.ndarray:
    """`base` (0/1 per item) with `lost` right answers turned wrong and `won` wrong turned right."""
    out = base.copy()
    out[np.flatnonzero(base == 1)[:lost]] = 0
    out[np.flatnonzero(base == 0)[:won]] = 1
    return out


BASE = (np.arange(SUITE) % 4 == 0).astype(int)  # greedy pass@1 0.25


def test_sampled_up_greedy_down_is_refused():
    rng = np.random.default_rng(0)
    champ = rng.binomial(K, 0.15, size=SUITE)
    chall = np.minimum(champ + 2 * (rng.random(SUITE) < 0.33), K)  # sampled pass@1 +0.08
    sampled = decide_paired(_items(champ, K), _items(chall, K))
    assert sampled.promote  # the sampled test alone would promote
    alarms, note = greedy_check(_greedy(BASE), _greedy(_flips(BASE, 40, 0)), **ARGS)
    assert note is None
    g = alarms[GREEDY]
    assert not g["ok"] and g["regression"] == pytest.approx(40 / SUITE) and g["ci_high"] < 0
    d = with_alarms(sampled, alarms)
    assert (d.promote, d.rule) == (False, f"guard:{GREEDY}")
    assert d.reason.startswith(f"blocked by guard {GREEDY}: {GREEDY} fell +0.0781")
    assert d.guards[GREEDY]["limit"] == 0.02


@pytest.mark.parametrize(
    "lost,won,ok,why",
    [
        (0, 0, True, "unchanged"),
        (10, 0, True, "a real drop of 0.0195, within the tolerance"),
        (100, 88, True, "a drop of 0.0234 past the tolerance, but within the noise"),
        (30, 10, False, "a drop of 0.039 past the tolerance, and real"),
        (0, 40, True, "a rise"),
    ],
)
def test_rule_needs_a_material_and_real_drop(lost, won, ok, why):
    alarms, _ = greedy_check(_greedy(BASE), _greedy(_flips(BASE, lost, won)), **ARGS)
    g = alarms[GREEDY]
    assert g["ok"] is ok, (why, g)
    if lost == 100:  # the point limit alone would have blocked this one
        assert g["regression"] > g["limit"] and g["ci_high"] >= 0


def test_equally_good_challengers_are_rarely_blocked():
    """Challengers as good as the champion whose greedy answers differ (each model's answer to
    an item is its own coin with the item's solve rate): the guard blocks about alpha of them;
    a point limit at the same tolerance would block several times as many (negative control)."""
    rng = np.random.default_rng(3)
    trials, blocked, point_blocked = 200, 0, 0
    for _ in range(trials):
        rates = rng.beta(0.6, 3.4, size=SUITE)
        a, b = rng.random(SUITE) < rates, rng.random(SUITE) < rates
        g = greedy_check(_greedy(a), _greedy(b), **{**ARGS, "n_boot": 1000})[0][GREEDY]
        blocked += not g["ok"]
        point_blocked += g["regression"] > g["limit"]
    print(f"equal challengers blocked: guard {blocked}/{trials}, point limit {point_blocked}")
    assert blocked / trials <= 0.08
    assert point_blocked / trials >= 0.1


def test_an_eval_without_greedy_results_skips_the_guard_with_a_note():
    base = _greedy(BASE)
    for champ, chall, who in ((None, base, "champion"), (base, [], "challenger")):
        alarms, note = greedy_check(champ, chall, **ARGS)
        assert alarms == {} and f"the {who} eval has no greedy results" in note
    alarms, note = greedy_check(None, None, **ARGS)
    assert "champion and challenger" in note
    d = decide_paired(_items(BASE * 4, K), _items(BASE * 4, K))
    noted = with_note(with_alarms(d, alarms), note)
    assert noted.notes == (note,) and noted.reason.endswith(note)
    assert (noted.promote, noted.rule) == (d.promote, d.rule)
    assert with_note(d, None) == d


def test_greedy_items_pair_by_id():
    champ = _greedy(BASE)
    with pytest.raises(ValueError, match="items_mismatch"):
        greedy_check(champ, champ[3:], **ARGS)
