"""The default gate does not promote noise: calibration of the shipped GateConfig under the
null, with the old margin-0 default as the negative control, and every shipped config on it."""

from pathlib import Path

import pytest

from bench.bench_gate_null import compared_gates, promotions, wilson
from tasks.config import GateConfig, load_config

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))
TRIALS = 250


def test_default_is_the_paired_bootstrap():
    g = GateConfig()
    assert (g.test, g.alpha, g.margin) == ("paired_bootstrap", 0.05, 0.0)
    assert g.guards  # the guards stay on by default


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_use_the_paired_bootstrap(path):
    assert load_config(path).gate.test == "paired_bootstrap", path.name


def test_margin_stays_an_explicit_opt_in():
    assert GateConfig(test="margin").test == "margin"


def test_default_false_promotion_rate_under_the_null():
    """Identical per-item success rates, 512 items x 8 samples, 250 seeded trials: the default
    promotes at about alpha; margin 0 on the very same trials promotes about half of them."""
    counts = promotions(compared_gates(), TRIALS, seed=5)
    default, margin0 = counts["default"] / TRIALS, counts["margin 0"] / TRIALS
    print(f"null promotions over {TRIALS} trials: default {default:.3f}, margin 0 {margin0:.3f}")
    # alpha plus ~2.5 Monte-Carlo standard errors at 250 trials (0.014)
    assert default <= GateConfig().alpha + 0.035
    assert margin0 > 0.3  # the negative control: this check can fail


def test_wilson_interval():
    lo, hi = wilson(102, 2000)
    assert lo < 102 / 2000 < hi
    assert (round(lo, 3), round(hi, 3)) == (0.042, 0.062)
    assert wilson(0, 100)[0] == 0.0 and wilson(100, 100)[1] == 1.0
