"""Gate calibration: how often each gate test promotes a challenger that is no better.

The null: champion and challenger share every item's true success probability (drawn per item
from Beta(0.6, 3.4): mean 0.15, many items near 0, a few easy ones, like the demo's tiny
policy), and each scores `k` independent samples per item on a `suite`-item frozen suite. Any
promotion is a false one. Every trial's pair of evals goes to both tests side by side, through
`tasks.gate.decide_test`, the function the gate stage calls:

- `default`: `GateConfig()` as shipped (paired bootstrap, alpha 0.05, margin 0, guards on);
- `margin 0`: `GateConfig(test="margin", margin=0.0)`, the old default.

Guard figures (format, truncation, length) are equal on both sides, so the guards never fire
and the rates measure the accuracy rule alone. The same trials with a true gain of `shift` on
every item give each test's power. The greedy guard is not simulated: it can only block.

    python -m bench.bench_gate_null                  # 2000 null trials, 500 power trials
    python -m bench.bench_gate_null --trials 300     # quicker
"""

from __future__ import annotations

import argparse
import json
import math
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from tasks.config import GateConfig
from tasks.gate import TEST_ARGS, decide_test

SUITE, K = 512, 8  # the demo's frozen suite and samples per item
BETA = (0.6, 3.4)  # per-item true solve rates of the demo's policy (mean 0.15)
RESULTS = Path(__file__).resolve().parent / "results"


def compared_gates() -> dict[str, GateConfig]:
    """The tests compared: the shipped default and the margin test it replaced."""
    return {"default": GateConfig(), "margin 0": GateConfig(test="margin", margin=0.0)}


def eval_items(correct: np.ndarray, k: int) -> list[dict]:
    """One eval's per-item rows (the fields of `ItemResult`) from its correct counts; format,
    truncation and length are equal for every item, so no guard fires."""
    return [
        {
            "item_id": f"q{i:04d}",
            "difficulty": 1,
            "n": k,
            "correct": c,
            "formatted": k,
            "truncated": 0,
            "majority_correct": 2 * c > k,
            "mean_tokens": 40.0,
        }
        for i, c in enumerate(correct.tolist())
    ]


def promotions(
    configs: dict[str, GateConfig],
    trials: int,
    seed: int,
    shift: float = 0.0,
    suite: int = SUITE,
    k: int = K,
) -> dict[str, int]:
    """How many of `trials` simulated generations each config promotes, when the challenger's
    true per-item rates are the champion's + `shift` (0: the null). Seeded and deterministic."""
    rng = np.random.default_rng(seed)
    args = {name: g.model_dump(include=set(TEST_ARGS)) for name, g in configs.items()}
    promoted = dict.fromkeys(configs, 0)
    for _ in range(trials):
        rates = rng.beta(*BETA, size=suite)
        champ = eval_items(rng.binomial(k, rates), k)
        chall = eval_items(rng.binomial(k, np.clip(rates + shift, 0.0, 1.0)), k)
        for name, kw in args.items():
            promoted[name] += decide_test(champ, chall, **kw).promote
    return promoted


def wilson(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score 95 % interval of a binomial rate (sound near 0, unlike the Wald one)."""
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = (
        z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    )
    return max(0.0, centre - half), min(1.0, centre + half)


def _rates(counts: dict[str, int], trials: int) -> dict[str, dict]:
    return {
        name: {"promoted": c, "trials": trials, "rate": c / trials, "ci95": list(wilson(c, trials))}
        for name, c in counts.items()
    }


def measure(trials: int = 2000, power_trials: int = 500, shift: float = 0.02, seed: int = 0):
    """False-promotion rates under the null and power at +`shift`, for both tests."""
    configs = compared_gates()
    t0 = time.perf_counter()
    null = promotions(configs, trials, seed)
    power = promotions(configs, power_trials, seed + 1, shift=shift)
    return {
        "suite": SUITE,
        "k": K,
        "beta": list(BETA),
        "alpha": configs["default"].alpha,
        "shift": shift,
        "configs": {n: g.model_dump(include=set(TEST_ARGS)) for n, g in configs.items()},
        "null": _rates(null, trials),
        "power": _rates(power, power_trials),
        "seconds": time.perf_counter() - t0,
    }


def ratios(m: dict) -> list:
    """G1: the default's false-promotion rate (goal <= alpha + 0.01); G2: margin 0's; G3: the
    default's power at +shift."""
    from bench.report import Goal, Ratio

    d, mg, pw = m["null"]["default"], m["null"]["margin 0"], m["power"]
    setting = f"{m['suite']} items x {m['k']} samples, Beta{tuple(m['beta'])} rates"

    def ci(r: dict) -> str:
        return f"95 % CI [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]"

    return [
        Ratio(
            "G1",
            "false promotions under the null, default gate (paired bootstrap)",
            d["rate"],
            Goal("<=", m["alpha"] + 0.01),
            unit="%",
            detail=f"{d['promoted']} of {d['trials']} null trials, {ci(d)}; {setting}",
        ),
        Ratio(
            "G2",
            "false promotions under the null, margin 0 (opt-in)",
            mg["rate"],
            unit="%",
            detail=f"{mg['promoted']} of {mg['trials']} on the same trials, {ci(mg)}",
        ),
        Ratio(
            "G3",
            f"promotions at a true +{m['shift']} pass@1 gain, default gate",
            pw["default"]["rate"],
            unit="%",
            detail=f"{pw['default']['promoted']} of {pw['default']['trials']} trials "
            f"(margin 0: {pw['margin 0']['rate']:.3f}), {ci(pw['default'])}",
        ),
    ]


def run(sizes: dict) -> object:
    """`bench.run_all`'s entry: `sizes["gate_trials"]` null trials (default 2000)."""
    from bench.report import BenchResult

    m = measure(trials=sizes.get("gate_trials", 2000))
    return BenchResult("gate_null", ratios(m), m, m["seconds"])


def cli() -> None:
    from bench.report import BenchResult, machine_info, result_filename, results_document

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=2000, help="null trials")
    ap.add_argument("--power-trials", type=int, default=500, help="trials at a true gain")
    ap.add_argument("--shift", type=float, default=0.02, help="the true gain for power")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON")
    args = ap.parse_args()
    machine, started = machine_info(), datetime.now(UTC)
    m = measure(args.trials, args.power_trials, args.shift, args.seed)
    res = BenchResult("gate_null", ratios(m), m, m["seconds"])
    for r in res.ratios:
        goal = f"  goal {r.goal}: {r.status}" if r.goal else ""
        print(f"{r.key} {r.name}: {r.value:.4f}{goal}  ({r.detail})")
    meta = {"mode": "gate_null", "started": started.isoformat(timespec="seconds")}
    meta["seconds"] = round(m["seconds"], 1)
    doc = results_document([res], machine, meta)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y%m%dT%H%M%SZ") + "-gate-null"
    path = args.out / result_filename(machine, stamp)
    path.write_text(json.dumps(doc, indent=2, default=str))
    print(f"{m['seconds']:.0f} s; results: {path}")


if __name__ == "__main__":
    cli()
