"""P7's pure helpers: compute matching, GRPO's step cap, paired gains and their intervals."""

from pathlib import Path

import pytest

from bench.bench_p7 import (
    LEVERS,
    Compute,
    gain_ratio,
    grpo_steps,
    matched_epochs,
    mean_interval,
    paired_diffs,
)
from tasks.config import load_config

BENCH = Path(__file__).parents[2] / "configs" / "bench.yaml"


def test_matched_epochs_sees_the_target_tokens():
    # The flywheel saw 3 generations x 2 epochs over 10k, 20k, 30k tokens = 120k tokens; a
    # one-shot set of 48k tokens needs 2.5 epochs for as many.
    assert matched_epochs(2 * (10_000 + 20_000 + 30_000), 48_000) == pytest.approx(2.5)


@pytest.mark.parametrize("target, per_epoch", [(100.0, 0), (0.0, 10), (-1.0, 10)])
def test_matched_epochs_refuses_what_cannot_match(target, per_epoch):
    with pytest.raises(ValueError, match="cannot match compute"):
        matched_epochs(target, per_epoch)


@pytest.mark.parametrize(
    "budget, tokens, rows, per_row, want",
    [
        (12_288, 1e9, 32, 50.0, 384),  # the sampling budget binds: 12,288 / 32
        (12_288, 320_000, 32, 50.0, 200),  # the training tokens bind: 320k / (32 x 50)
        (12_288, 10.0, 32, 50.0, 1),  # at least one step
        (20, 1e9, 32, 50.0, 1),  # a budget below one step still trains one
    ],
)
def test_grpo_steps_take_the_tighter_cap(budget, tokens, rows, per_row, want):
    assert grpo_steps(budget, tokens, rows, per_row) == want


def test_grpo_steps_refuse_empty_steps():
    with pytest.raises(ValueError, match="rows_per_step"):
        grpo_steps(100, 100.0, 0, 10.0)


def _items(scores: dict[str, tuple[int, int]]) -> list[dict]:
    return [{"item_id": k, "correct": c, "n": n} for k, (c, n) in scores.items()]


def test_paired_diffs_pair_items_by_id_whatever_their_order():
    before = _items({"b": (1, 4), "a": (0, 4)})
    after = _items({"a": (2, 4), "b": (1, 4)})
    assert paired_diffs(before, after) == [0.5, 0.0]


def test_paired_diffs_refuse_different_suites():
    with pytest.raises(ValueError, match="different items"):
        paired_diffs(_items({"a": (0, 4)}), _items({"b": (0, 4)}))


def test_mean_interval_brackets_the_mean_and_is_seeded():
    values = [0.0] * 90 + [0.25] * 10
    mean, low, high = mean_interval(values)
    assert mean == pytest.approx(0.025)
    assert 0 <= low < mean < high
    assert mean_interval(values) == (mean, low, high)
    assert mean_interval([0.1] * 20) == pytest.approx((0.1, 0.1, 0.1))


@pytest.mark.parametrize(
    "gain, ref, want", [(0.03, 0.02, 1.5), (0.01, 0.0, None), (0.01, -0.01, None)]
)
def test_gain_ratio_is_undefined_without_a_reference_gain(gain, ref, want):
    assert gain_ratio(gain, ref) == (pytest.approx(want) if want else None)


def test_compute_adds_up():
    total = Compute(3, 100.0, 8.0, 0) + Compute(sampled=64) + Compute(2, 50.0, 4.0, 0)
    assert total == Compute(5, 150.0, 12.0, 64)


@pytest.mark.parametrize("lever", sorted(LEVERS))
def test_every_lever_is_a_valid_bench_config(lever):
    cfg = load_config(BENCH, **LEVERS[lever])
    assert cfg.generations == 3


def _arm(p1: float, gain: float | None, tokens: float = 1000.0, sampled: int = 64) -> dict:
    arm = {
        "pass@1": p1,
        "pass@1_ci": [p1 - 0.01, p1 + 0.01],
        "greedy": 0.3,
        "pass@k": 0.2,
        "mean_tokens": 20.0,
        "compute": {"steps": 4, "tokens": tokens, "rows_seen": 40.0, "sampled": sampled},
    }
    if gain is not None:
        arm.update(gain=gain, gain_ci=[gain - 0.01, gain + 0.01])
    return arm


def _figures(fw_gain: float, rft_gain: float) -> dict:
    check = {
        "generation": 1,
        "promoted": True,
        "pass@1_gain": 0.02,
        "pass@1_gain_ci": [0.01, 0.03],
        "greedy_change": -0.01,
        "ok": True,
    }
    return {
        "config": "configs/bench.yaml",
        "generations": 3,
        "k": 4,
        "base": _arm(0.10, None),
        "arms": {
            "flywheel": {**_arm(0.10 + fw_gain, fw_gain), "checks": [check]},
            "rft": _arm(0.10 + rft_gain, rft_gain),
            "grpo": _arm(0.11, 0.01),
            "reference": _arm(0.20, 0.10, sampled=0),
        },
        "flywheel_vs_rft": {"diff": fw_gain - rft_gain, "low": -0.01, "high": 0.02},
        "dpo": {"dpo": {**_arm(0.09, -0.01), "pairs": 30}, "sft": _arm(0.12, 0.02)},
        "levers": {"curriculum": {"set": LEVERS["curriculum"], **_arm(0.13, 0.03)}},
    }


def test_p7_rows_put_the_goal_on_the_gain_ratio():
    from bench.bench_p7 import ratios

    rows = ratios(_figures(0.03, 0.02))
    head = rows[0]
    assert head.key == "P7" and head.value == pytest.approx(1.5)
    assert str(head.goal) == ">= 1.2" and head.status == "met"
    lever = [r for r in rows if r.name.startswith("lever curriculum")]
    assert lever[0].value == pytest.approx(1.5)
    checks = [r for r in rows if "greedy" in r.name]
    assert checks[0].value == 0 and checks[0].status == "met"


def test_p7_ratio_is_undefined_when_rft_did_not_gain():
    from bench.bench_p7 import ratios

    head = ratios(_figures(0.03, 0.0))[0]
    assert head.value is None and head.status == "failed" and "did not gain" in head.note


@pytest.mark.parametrize("promote", [True, False])
def test_p7_is_given_again_with_rft_held_to_the_flywheels_gate(promote):
    from bench.bench_p7 import ratios

    m = _figures(0.03, 0.02)
    assert not [r for r in ratios(m) if "held to" in r.name]  # no verdict: no row
    m["arms"]["rft"]["gate"] = {"promote": promote, "rule": "r", "reason": "why"}
    held = [r for r in ratios(m) if "held to" in r.name]
    assert len(held) == 1 and "why" in held[0].detail
    assert held[0].value == (pytest.approx(1.5) if promote else None)
    assert ("would not promote" in held[0].note) is not promote


def test_markdown_table_has_a_row_per_arm_dpo_and_lever():
    from bench.bench_p7 import markdown_table

    lines = markdown_table(_figures(0.03, 0.02)).splitlines()
    names = [line.split("|")[1].strip() for line in lines[2:]]
    assert names == [
        "base",
        "flywheel",
        "one-shot RFT",
        "GRPO only",
        "reference SFT (upper bound)",
        "gen 1 SFT",
        "gen 1 DPO",
        "lever curriculum",
    ]


def test_p7_rows_and_table_without_the_extras():
    from bench.bench_p7 import markdown_table, ratios

    m = _figures(0.03, 0.02)
    del m["dpo"], m["arms"]["grpo"], m["arms"]["reference"]
    assert not [r for r in ratios(m) if "DPO" in r.name]
    assert len(markdown_table(m).splitlines()) == 2 + 4  # base, flywheel, RFT, one lever


def test_set_overrides_parse_as_yaml_values_and_refuse_a_missing_value():
    from bench.bench_p7 import parse_set

    assert parse_set("train.learning_rate=1.0e-4") == ("train.learning_rate", 1.0e-4)
    assert parse_set("seeds.levels=[1, 2]") == ("seeds.levels", [1, 2])
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        parse_set("train.learning_rate")
