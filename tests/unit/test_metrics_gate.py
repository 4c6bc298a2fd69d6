import math

import pytest

from tasks.gate import decide
from tasks.metrics import pass_at_k, report, score_item

R = "<think>x</think><answer>{}</answer>"


@pytest.mark.parametrize(
    "n,c,k,expected",
    [
        (8, 0, 1, 0.0),
        (8, 8, 1, 1.0),
        (8, 2, 1, 0.25),
        (8, 1, 8, 1.0),
        (8, 0, 8, 0.0),
        (10, 3, 2, 1 - math.comb(7, 2) / math.comb(10, 2)),
    ],
)
def test_pass_at_k(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_rejects_bad_args():
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)


def test_score_item_and_report():
    a = score_item(
        "a",
        1,
        "3",
        "arith",
        [R.format(3), R.format(4), R.format(4), "x"],
        [10, 10, 10, 30],
        ["stop", "stop", "stop", "length"],
    )
    assert (a.correct, a.formatted, a.truncated, a.majority_correct) == (1, 3, 1, False)
    b = score_item("b", 2, "5", "arith", [R.format(5)] * 4, [5] * 4, ["stop"] * 4)
    rep = report([a, b], k=4)
    assert rep["pass@1"] == pytest.approx((0.25 + 1.0) / 2)
    assert rep["pass@4"] == pytest.approx(1.0)
    assert rep["maj@4"] == pytest.approx(0.5)
    assert rep["format_rate"] == pytest.approx(7 / 8)
    assert rep["truncation_rate"] == pytest.approx(1 / 8)
    assert rep["mean_tokens"] == pytest.approx((60 + 20) / 8)
    assert rep["pass@1_level1"] == pytest.approx(0.25)


@pytest.mark.parametrize(
    "champ,chall,margin,promote",
    [
        (0.10, 0.12, 0.0, True),
        (0.10, 0.10, 0.0, False),
        (0.10, 0.12, 0.05, False),
        (0.30, 0.20, 0.0, False),
    ],
)
def test_gate(champ, chall, margin, promote):
    d = decide({"pass@1": champ}, {"pass@1": chall}, "pass@1", margin, k=8)
    assert d.promote is promote
    assert d.delta == pytest.approx(chall - champ)
    assert "margin" in d.reason


def test_gate_names_missing_metric():
    with pytest.raises(KeyError, match="pass@8"):
        decide({"pass@1": 0.1}, {"pass@1": 0.2}, "pass@k", 0.0, k=8)


@pytest.mark.parametrize("metric", ["pass@1", "pass@k", "maj@k"])
def test_margin_test_on_items_matches_the_reports(metric):
    """`decide_test` runs the margin test on eval items; it decides as `decide` does on the
    suite reports `metrics.report` makes of the same items."""
    from dataclasses import asdict

    from tasks.gate import decide_test

    def items(shift: int):
        """20 items, 4 samples each; item i has min(4, i % 5 + shift) right answers."""
        out = []
        for i in range(20):
            c = min(4, i % 5 + shift)
            answers = [R.format(3)] * c + [R.format(4)] * (4 - c)
            out.append(score_item(f"q{i}", 1, "3", "arith", answers, [10] * 4, ["stop"] * 4))
        return out

    champ, chall = items(0), items(1)
    want = decide(report(champ, 4), report(chall, 4), metric, 0.0, k=4)
    got = decide_test(
        [asdict(i) for i in champ],
        [asdict(i) for i in chall],
        test="margin",
        metric=metric,
        margin=0.0,
        alpha=0.05,
        n_boot=100,
        seed=0,
        guards=None,
    )
    assert (got.promote, got.metric, got.rule) == (want.promote, want.metric, want.rule)
    assert got.delta == pytest.approx(want.delta) and want.delta > 0
    with pytest.raises(ValueError, match="unknown gate test"):
        decide_test(
            [], [], test="vibes", metric=metric, margin=0, alpha=0.05, n_boot=1, seed=0, guards=None
        )
