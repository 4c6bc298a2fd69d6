"""Judge QC against the rules: per-class error rates, balanced accuracy and kappa with their
intervals, on hand-made confusion tables; and their projections (MLflow metrics, table columns)."""

from __future__ import annotations

import math

import pytest

from tasks.judge import JudgeOutput, vote
from tasks.judge_qc import (
    FIGURES,
    UNDEFINED,
    Z95,
    Confusion,
    Estimate,
    agreement,
    balanced_accuracy,
    confusion,
    false_accept_rate,
    false_reject_rate,
    judge_figures,
    kappa,
    qc_metrics,
    wilson,
)
from tasks.records import Verdict

A, R = JudgeOutput("accept", "label"), JudgeOutput("reject", "label")
ACC, REJ = Verdict("accept", "ok"), Verdict("reject", "no")

# Confusion(both_accept, judge_only_accept, rules_only_accept, both_reject)
BALANCED = Confusion(40, 5, 10, 45)  # rules accept 50 of 100, judge 45
RARE = Confusion(8, 18, 2, 72)  # rules accept 10 of 100, judge 26
# The demo's situation: rules accept 768 of 16,384 policy candidates (4.7 %).
CONSTANT_REJECT = Confusion(0, 0, 768, 15616)
# A judge blind to correctness: accepts 5/8 of each rule class; agreement 0.39.
COIN = Confusion(480, 9760, 288, 5856)


def judged(c: Confusion) -> tuple[list, list]:
    """Votes and rule verdicts that make the table `c`."""
    pairs = (
        [(A, ACC)] * c.both_accept
        + [(A, REJ)] * c.judge_only_accept
        + [(R, ACC)] * c.rules_only_accept
        + [(R, REJ)] * c.both_reject
    )
    return [vote([j]) for j, _ in pairs], [r for _, r in pairs]


# -- exact values ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "c, far, frr, bal, kap, agree",
    [
        (BALANCED, 5 / 50, 10 / 50, (0.8 + 0.9) / 2, 0.7, 0.85),
        # p_e = 0.1 * 0.26 + 0.9 * 0.74 = 0.692; kappa = (0.8 - 0.692) / 0.308 = 27/77
        (RARE, 18 / 90, 2 / 10, 0.8, 27 / 77, 0.8),
        (Confusion(3, 0, 0, 7), 0.0, 0.0, 1.0, 1.0, 1.0),  # perfect judge
        (Confusion(0, 7, 3, 0), 1.0, 1.0, 0.0, -0.7241379310344829, 0.0),  # inverted judge
    ],
)
def test_figures_on_hand_made_tables(c, far, frr, bal, kap, agree):
    assert false_accept_rate(c).value == pytest.approx(far, abs=1e-12)
    assert false_reject_rate(c).value == pytest.approx(frr, abs=1e-12)
    assert balanced_accuracy(c).value == pytest.approx(bal, abs=1e-12)
    assert kappa(c).value == pytest.approx(kap, abs=1e-12)
    assert agreement(c).value == pytest.approx(agree, abs=1e-12)


def test_inverted_judge_kappa_by_hand():
    # rules accept 0.3, judge accepts 0.7: p_e = 0.3 * 0.7 + 0.7 * 0.3 = 0.42, p_o = 0
    assert kappa(Confusion(0, 7, 3, 0)).value == pytest.approx(-0.42 / 0.58, abs=1e-12)


@pytest.mark.parametrize("c", [BALANCED, RARE, CONSTANT_REJECT, COIN, Confusion(1, 2, 3, 4)])
def test_point_values_match_scikit_learn(c):
    from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score

    rules = [1] * c.both_accept + [0] * c.judge_only_accept + [1] * c.rules_only_accept
    rules += [0] * c.both_reject
    judge = [1] * (c.both_accept + c.judge_only_accept) + [0] * (c.rules_only_accept)
    judge += [0] * c.both_reject
    assert balanced_accuracy(c).value == pytest.approx(balanced_accuracy_score(rules, judge))
    assert kappa(c).value == pytest.approx(cohen_kappa_score(rules, judge), abs=1e-12)


# -- the case agreement hides --------------------------------------------------------------------
def test_constant_reject_judge_agrees_often_yet_scores_as_chance():
    votes, rules = judged(CONSTANT_REJECT)
    m = qc_metrics(votes, rules)
    assert m["agreement"] == pytest.approx(15616 / 16384)  # 0.953: looks like a good judge
    assert m["balanced_accuracy"] == 0.5 and m["kappa"] == 0.0
    assert m["false_accept_rate"] == 0.0 and m["false_reject_rate"] == 1.0
    assert m["rules_accepts"] == 768 and m["rules_rejects"] == 15616 and m["compared"] == 16384


def test_judge_blind_to_correctness_scores_as_chance_while_agreement_is_low():
    votes, rules = judged(COIN)
    m = qc_metrics(votes, rules)
    assert m["agreement"] == pytest.approx((480 + 5856) / 16384)  # 0.39
    assert m["balanced_accuracy"] == pytest.approx(0.5, abs=1e-12)
    assert m["kappa"] == pytest.approx(0.0, abs=1e-12)
    assert m["kappa.high"] < 0.02  # the interval rules out a useful judge at this size


def test_a_useful_judge_clears_the_constant_judge_bar():
    """Negative control for the figures above: they are not 0.5 / 0 for any judge."""
    m = qc_metrics(*judged(RARE))
    assert m["balanced_accuracy.low"] > 0.5 and m["kappa.low"] > 0.0


# -- intervals -----------------------------------------------------------------------------------
def test_wilson_matches_scipy():
    from scipy.stats import binomtest

    for k, n in [(0, 10), (5, 10), (10, 10), (3, 17), (768, 16384)]:
        ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        est = wilson(k, n)
        assert est.value == k / n
        assert est.low == pytest.approx(ci.low, abs=1e-12)
        assert est.high == pytest.approx(ci.high, abs=1e-12)


def test_balanced_accuracy_interval_combines_the_two_wilson_intervals():
    """Newcombe's MOVER: the sum's lower limit recovers each rate's distance to its own
    lower Wilson limit, and likewise above."""
    from scipy.stats import binomtest

    c = RARE
    t = binomtest(c.both_accept, c.rules_accepts).proportion_ci(method="wilson")
    s = binomtest(c.both_reject, c.rules_rejects).proportion_ci(method="wilson")
    p1, p2 = 0.8, 0.8
    est = balanced_accuracy(c)
    assert est.low == pytest.approx((p1 + p2 - math.hypot(p1 - t.low, p2 - s.low)) / 2)
    assert est.high == pytest.approx((p1 + p2 + math.hypot(t.high - p1, s.high - p2)) / 2)


def test_kappa_interval_is_the_fleiss_cohen_everitt_variance():
    # By hand for BALANCED (rows rules, columns judge; kappa 0.7, p_e 0.5, n 100):
    # diagonal 0.4 * (1 - 0.95 * 0.3)^2 + 0.45 * (1 - 1.05 * 0.3)^2 = 0.41564125
    # off 0.09 * (0.1 * 0.95^2 + 0.05 * 1.05^2) = 0.01308375; (0.7 - 0.5 * 0.3)^2 = 0.3025
    var = (0.41564125 + 0.01308375 - 0.3025) / (0.25 * 100)
    est = kappa(BALANCED)
    assert var == pytest.approx(0.005049)
    assert est.low == pytest.approx(0.7 - Z95 * math.sqrt(var))
    assert est.high == pytest.approx(0.7 + Z95 * math.sqrt(var))


TABLES = [
    BALANCED,
    RARE,
    CONSTANT_REJECT,
    COIN,
    Confusion(3, 0, 0, 7),
    Confusion(0, 7, 3, 0),
    Confusion(1, 0, 0, 0),
    Confusion(0, 1, 1, 0),
    Confusion(2, 1, 0, 0),
]


@pytest.mark.parametrize("c", TABLES)
def test_intervals_hold_the_point_and_stay_in_range(c):
    for name, figure in FIGURES.items():
        est = figure(c)
        if est.value is None:
            assert est == UNDEFINED, name
            continue
        floor = -1.0 if name == "kappa" else 0.0
        assert floor <= est.low <= est.value <= est.high <= 1.0, (name, est)


def test_intervals_narrow_with_more_data():
    small, large = RARE, Confusion(*(10 * x for x in (8, 18, 2, 72)))
    for name, figure in FIGURES.items():
        a, b = figure(small), figure(large)
        assert b.value == pytest.approx(a.value), name
        assert b.high - b.low < a.high - a.low, name


# -- undefined cases -----------------------------------------------------------------------------
def test_nothing_compared_gives_none_not_nan():
    m = qc_metrics([], [])
    assert m["candidates"] == 0 and m["compared"] == 0
    for name in FIGURES:
        assert m[name] is None and m[f"{name}.low"] is None and m[f"{name}.high"] is None


def test_no_rule_accepts_leaves_the_per_class_figures_undefined():
    m = qc_metrics(*judged(Confusion(0, 3, 0, 7)))
    assert m["false_reject_rate"] is None and m["balanced_accuracy"] is None
    assert m["false_accept_rate"] == pytest.approx(0.3)
    assert m["kappa"] == 0.0  # defined: the rules are constant, chance agreement is 0.7


def test_kappa_undefined_when_both_sides_are_constant_and_equal():
    assert kappa(Confusion(0, 0, 0, 5)) == UNDEFINED
    assert kappa(Confusion(5, 0, 0, 0)) == UNDEFINED
    assert kappa(Confusion(0, 0, 0, 0)) == UNDEFINED


def test_infra_errors_and_missing_rules_stay_out_of_the_table():
    votes = [vote([A]), vote([A, R]), vote([R]), vote([A])]  # the second is a tie: infra_error
    rules = [ACC, ACC, None, Verdict("infra_error", "timeout")]
    assert confusion(votes, rules) == Confusion(1, 0, 0, 0)
    m = qc_metrics(votes, rules)
    assert m["compared"] == 1 and m["infra_errors"] == 1 and m["balanced_accuracy"] is None


def test_qc_dict_keeps_the_vote_figures_and_is_json_numbers_or_none():
    m = qc_metrics(*judged(BALANCED))
    assert m["candidates"] == 100 and m["votes"] == 100 and m["accepts"] == 45
    assert m["confusion.both_accept"] == 40 and m["confusion.rules_only_accept"] == 10
    assert all(v is None or isinstance(v, int | float) for v in m.values())


# -- projections -----------------------------------------------------------------------------------
def test_judge_figures_read_old_manifests():
    old = {"agreement": float("nan"), "compared": 0.0, "mean_margin": 0.5}  # before the figures
    figures = judge_figures(old)
    assert all(f == UNDEFINED for f in figures.values())
    assert judge_figures({"agreement": 0.7})["agreement"] == Estimate(0.7)
    assert judge_figures(None)["kappa"] == UNDEFINED


def test_mlflow_metrics_flatten_the_figures_and_their_bounds():
    from tasks.projections import judge_columns, judge_metrics

    qc = {**qc_metrics(*judged(RARE)), "rubric_version": "arith_v3", "cut": {"share": 0.25}}
    m = judge_metrics(qc)
    assert m["judge.balanced_accuracy"] == pytest.approx(0.8)
    assert m["judge.kappa"] == pytest.approx(27 / 77)
    for name in FIGURES:
        assert m[f"judge.{name}.low"] <= m[f"judge.{name}"] <= m[f"judge.{name}.high"]
    assert m["judge.cut.share"] == 0.25 and "judge.rubric_version" not in m
    undefined = judge_metrics({**qc_metrics([], []), "agreement_old": float("nan")})
    assert "judge.kappa" not in undefined and "judge.agreement_old" not in undefined
    assert judge_metrics(None) == {}
    assert judge_columns(qc) == {
        "judge agree": pytest.approx(0.8),
        "judge bal.acc": pytest.approx(0.8),
        "judge kappa": pytest.approx(27 / 77),
    }
    assert judge_columns({"agreement": 0.6}) == {
        "judge agree": 0.6,
        "judge bal.acc": None,
        "judge kappa": None,
    }


def test_summary_table_keeps_judge_columns_aligned_when_only_some_rows_have_them(monkeypatch):
    from rich.console import Console

    from flows import cli

    record = Console(record=True, width=200)
    monkeypatch.setattr(cli, "console", record)
    rules_only = {"gen": 1, "accept": 0.25, "gate": True}
    judged = {"gen": 2, "accept": 0.5, "gate": False, **judge_columns_of(RARE)}
    cli.print_table([rules_only, judged], "t")
    lines = record.export_text().splitlines()
    header = [c.strip() for c in lines[2].split("┃")[1:-1]]
    rows = [[c.strip() for c in ln.split("│")[1:-1]] for ln in lines[4:6]]
    assert [dict(zip(header, r, strict=True)) for r in rows] == [
        {"gen": "1", "accept": "0.250", "gate": "promoted"}
        | {"judge agree": "-", "judge bal.acc": "-", "judge kappa": "-"},
        {"gen": "2", "accept": "0.500", "gate": "kept champion"}
        | {"judge agree": "0.800", "judge bal.acc": "0.800", "judge kappa": "0.351"},
    ]


def judge_columns_of(c: Confusion) -> dict:
    from tasks.projections import judge_columns

    return judge_columns(qc_metrics(*judged(c)))
