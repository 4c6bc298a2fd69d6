"""Eval settings are frozen with the suite, and the gate stage compares only evals sampled under
the same settings; it also wires the greedy guard in (a note, not a crash, for old evals)."""

import json

import numpy as np
import pytest

from tasks import store
from tasks.config import FlywheelConfig
from tasks.gate import GREEDY, check_comparable
from tasks.outputs import Champion
from tasks.stages import GREEDY_ITEMS, gate_decision, suite_stage
from tasks.stages.evaluate import greedy_items_file

PARAMS = {"n": 8, "temperature": 1.0, "top_p": 1.0, "max_tokens": 96, "seed": 1234}


def _cfg(tmp_path, **eval_fields) -> FlywheelConfig:
    return FlywheelConfig(
        name="fw",
        runs_dir=tmp_path,
        eval={"suite_size": 16, **eval_fields},
        hygiene={"collapse_max_drop": {}},  # no completions in these hand-made evals
    )


@pytest.mark.parametrize(
    "field,value,shown",
    [
        ("k", 4, "eval.k: 4 (frozen: 8)"),
        ("temperature", 0.7, "eval.temperature: 0.7 (frozen: 1.0)"),
        ("max_tokens", 128, "eval.max_tokens: 128 (frozen: 96)"),
        ("seed", 7, "eval.seed: 7 (frozen: 1234)"),
    ],
)
def test_changed_eval_setting_is_refused_naming_field_and_values(tmp_path, field, value, shown):
    folder = suite_stage.fn(_cfg(tmp_path))
    assert store.read_manifest(folder).outputs["eval_settings"] == {
        "k": 8,
        "temperature": 1.0,
        "max_tokens": 96,
        "seed": 1234,
    }
    assert suite_stage.fn(_cfg(tmp_path)) == folder  # unchanged settings: read back
    with pytest.raises(ValueError, match="frozen with the suite") as e:
        suite_stage.fn(_cfg(tmp_path, **{field: value}))
    assert str(e.value).startswith(shown)


def test_suite_frozen_before_settings_were_recorded_is_accepted(tmp_path):
    folder = suite_stage.fn(_cfg(tmp_path))
    man = folder / "manifest.json"
    data = json.loads(man.read_text())
    del data["outputs"]["eval_settings"]
    man.write_text(json.dumps(data))
    assert suite_stage.fn(_cfg(tmp_path, k=4)) == folder  # the gate's check stands instead


def test_check_comparable():
    check_comparable(PARAMS, dict(PARAMS))
    with pytest.raises(ValueError) as e:
        check_comparable(PARAMS, {**PARAMS, "n": 4, "seed": 1}, where="(gen 0 vs 1)")
    msg = str(e.value)
    assert msg.startswith("eval_settings_mismatch (gen 0 vs 1)")
    assert "eval.k: champion 8, challenger 4" in msg
    assert "eval.seed: champion 1234, challenger 1" in msg


# -- the gate stage over hand-made evals ---------------------------------------------------------
def _eval(cfg, generation, correct, params=PARAMS, greedy=None, suite_greedy=None):
    """A finished eval folder: items.parquet, its manifest and, if given, greedy items (of the
    main suite; `suite_greedy`: of extra suites, by name)."""

    def rows(values, k):
        return [
            {
                "item_id": f"q{i:03d}",
                "difficulty": 1,
                "n": k,
                "correct": int(c),
                "formatted": k,
                "truncated": 0,
                "majority_correct": 2 * int(c) > k,
                "mean_tokens": 40.0,
            }
            for i, c in enumerate(values)
        ]

    folder = store.stage_dir(cfg.flywheel_dir, generation, "eval")
    with store.write_stage(folder, "eval") as (tmp, out):
        store.write_parquet(rows(correct, params["n"]), tmp / "items.parquet")
        if greedy is not None:
            store.write_parquet(rows(greedy, 1), tmp / GREEDY_ITEMS)
        for name, values in (suite_greedy or {}).items():
            store.write_parquet(rows(values, 1), tmp / greedy_items_file(name))
        out.update(
            report={"pass@1": float(np.mean(correct)) / params["n"]}, model="m", params=params
        )
    return Champion("m", {}, generation)


ITEMS = 256
CHAMP = np.random.default_rng(0).binomial(8, 0.15, size=ITEMS)
BETTER = np.minimum(CHAMP + 2 * (np.arange(ITEMS) % 3 == 0), 8)  # sampled pass@1 +0.08
GREEDY_BASE = (np.arange(ITEMS) % 4 == 0).astype(int)
GREEDY_WORSE = np.where(np.arange(ITEMS) % 8 == 0, 0, GREEDY_BASE)  # greedy 0.25 -> 0.125


def test_gate_refuses_evals_sampled_under_different_settings(tmp_path):
    cfg = _cfg(tmp_path)
    champ = _eval(cfg, 0, CHAMP)
    chall = _eval(cfg, 1, BETTER, params={**PARAMS, "temperature": 0.7})
    with pytest.raises(ValueError, match=r"eval_settings_mismatch \(champion gen-0000") as e:
        gate_decision(cfg, champ, chall)
    assert "eval.temperature: champion 1.0, challenger 0.7" in str(e.value)


def test_gate_blocks_sampled_gain_with_greedy_loss(tmp_path):
    cfg = _cfg(tmp_path)
    champ = _eval(cfg, 0, CHAMP, greedy=GREEDY_BASE)
    chall = _eval(cfg, 1, BETTER, greedy=GREEDY_WORSE)
    d = gate_decision(cfg, champ, chall)
    assert d.ci_low > 0  # the paired test alone promotes
    assert (d.promote, d.rule) == (False, f"guard:{GREEDY}")
    assert f"{GREEDY} fell +0.1250" in d.reason and d.notes == ()


def test_gate_promotes_when_greedy_holds_and_notes_a_skipped_guard(tmp_path):
    cfg = _cfg(tmp_path)
    champ = _eval(cfg, 0, CHAMP, greedy=GREEDY_BASE)
    chall = _eval(cfg, 1, BETTER, greedy=GREEDY_BASE)
    d = gate_decision(cfg, champ, chall)
    assert (d.promote, d.rule) == (True, "promote") and d.guards[GREEDY]["ok"]
    old = _eval(cfg, 2, BETTER)  # an eval recorded before greedy results existed
    d = gate_decision(cfg, champ, old)
    assert (d.promote, d.rule) == (True, "promote") and GREEDY not in d.guards
    assert d.notes and "challenger eval has no greedy results" in d.notes[0]


HARD = {"hard": {"levels": [2, 3], "size": ITEMS, "greedy": True}}


def test_gate_blocks_greedy_loss_on_a_guarded_extra_suite(tmp_path):
    """The main suite's greedy holds; the harder suite's falls for real: not promoted, and the
    guard names the suite."""
    cfg = _cfg(tmp_path, extra_suites=HARD)
    champ = _eval(cfg, 0, CHAMP, greedy=GREEDY_BASE, suite_greedy={"hard": GREEDY_BASE})
    chall = _eval(cfg, 1, BETTER, greedy=GREEDY_BASE, suite_greedy={"hard": GREEDY_WORSE})
    d = gate_decision(cfg, champ, chall)
    key = f"suite.hard.{GREEDY}"
    assert d.guards[GREEDY]["ok"] and not d.guards[key]["ok"]
    assert (d.promote, d.rule) == (False, f"guard:{key}")
    assert f"suite hard: {GREEDY} fell +0.1250" in d.reason
    same = _eval(cfg, 2, BETTER, greedy=GREEDY_BASE, suite_greedy={"hard": GREEDY_BASE})
    d = gate_decision(cfg, champ, same)
    assert (d.promote, d.rule) == (True, "promote") and d.guards[key]["ok"]


def test_an_unguarded_or_unrecorded_extra_suite_does_not_block(tmp_path):
    cfg = _cfg(tmp_path, extra_suites={"hard": {**HARD["hard"], "greedy": False}})
    champ = _eval(cfg, 0, CHAMP, greedy=GREEDY_BASE, suite_greedy={"hard": GREEDY_BASE})
    chall = _eval(cfg, 1, BETTER, greedy=GREEDY_BASE, suite_greedy={"hard": GREEDY_WORSE})
    d = gate_decision(cfg, champ, chall)
    assert d.promote and f"suite.hard.{GREEDY}" not in d.guards
    # guarded, but the champion's eval was made before the suite's greedy items were kept
    cfg = _cfg(tmp_path, extra_suites=HARD)
    old = _eval(cfg, 2, CHAMP, greedy=GREEDY_BASE)
    d = gate_decision(cfg, old, chall)
    assert d.promote
    assert d.notes == (
        "suite hard: greedy_pass@1 guard skipped: the champion eval has no "
        "greedy results (made before greedy evaluation was recorded, or with "
        "eval.greedy off)",
    )


def test_a_greedy_suite_guard_needs_greedy_evaluation():
    with pytest.raises(ValueError, match=r"extra_suites\.hard\.greedy .* eval\.greedy: false"):
        FlywheelConfig(eval={"greedy": False, "extra_suites": HARD})


def test_margin_test_runs_on_the_same_items(tmp_path):
    cfg = FlywheelConfig(**{**_cfg(tmp_path).model_dump(), "gate": {"test": "margin"}})
    champ = _eval(cfg, 0, CHAMP, greedy=GREEDY_BASE)
    chall = _eval(cfg, 1, BETTER, greedy=GREEDY_BASE)
    d = gate_decision(cfg, champ, chall)
    assert (d.promote, d.rule, d.ci_low) == (True, "promote", None)
    assert d.delta == pytest.approx((BETTER - CHAMP).mean() / 8)
