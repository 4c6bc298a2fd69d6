"""The embedded judge on the base policy's own candidates: trained with and without the policy's
samples, measured against the rules on fresh held-out candidates of the same policy.

Everything is built the way the flow builds it, from one config (default `configs/demo.yaml`):
the frozen suite (`suite_stage`), the base policy (`base_model_stage`), the judge
(`judge_model_path`, once with `judge.policy_samples` as configured and once with 0, the
synthetic-only recipe). The held-out candidates are one sample each of the base policy (HF
`generate`, at the flywheel's sampling settings) on questions drawn like the flywheel's own seeds
(`seeds.levels`), none of them in the suite or among the questions the judge's policy samples
came from. Each judge votes on them as curation runs it (vLLM, k votes at the judge's
temperature). Reported per judge, with 95 % intervals (`tasks.judge_qc`): balanced accuracy,
Cohen's kappa, false-accept and false-reject rates, agreement; the target is balanced accuracy
>= 0.75 with policy samples.

CPU-heavy: the base policy and each judge are trained from scratch unless cached in --runs-dir
(a judge build is ~10 minutes on two shared cores).

    python -m bench.judge_policy_qc --candidates 2048 --runs-dir /tmp/judge-policy-qc
"""

from __future__ import annotations

import argparse
import inspect
import json
import random
import time
from datetime import UTC, datetime
from pathlib import Path

from tasks.config import FlywheelConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
TARGET_BALANCED_ACCURACY = 0.75


def held_out(cfg: FlywheelConfig, suite_folder: Path, policy: str, size: int) -> list:
    """`size` rule-labelled base-policy candidates on questions the judge never trained on as
    policy samples (nor the suite's)."""
    from tasks.judge_bootstrap import bootstrap_judge, sample_policy
    from tasks.judge_data import policy_candidates, training_seeds
    from tasks.requests import policy_sampling
    from tasks.stages import read_seeds

    suite = {s.question for s in read_seeds(suite_folder)}
    # The stage leaves the judge's max_difficulty at `bootstrap_judge`'s default.
    levels = list(
        range(1, inspect.signature(bootstrap_judge).parameters["max_difficulty"].default + 1)
    )
    judge_seen = {  # the judge's own policy-sample questions (`tasks.judge_bootstrap.policy_pool`)
        s.question
        for s in training_seeds(
            random.Random(f"judge-policy/{cfg.judge.seed}"),
            cfg.judge.policy_samples,
            levels,
            suite,
            cfg.domain,
        )
    }
    seeds = training_seeds(
        random.Random("judge-policy-qc/held-out"),
        size,
        cfg.seeds.levels,
        suite | judge_seen,
        cfg.domain,
    )
    # Sampled as the judge's own policy samples are (`tasks.requests.policy_sampling`).
    completions = sample_policy(policy, seeds, policy_sampling(cfg), seed=12345, progress=False)
    return policy_candidates(seeds, completions, cfg.domain)


def measure_judge(cfg: FlywheelConfig, judge_path: str, cands: list) -> dict:
    """One judge's votes on `cands`, against the rules, with intervals."""
    from tasks.judge_qc import (
        Confusion,
        agreement,
        balanced_accuracy,
        false_accept_rate,
        false_reject_rate,
        kappa,
    )
    from tasks.judge_run import judge_candidates
    from tasks.requests import judge_settings

    settings = judge_settings(cfg, judge_path, seed=cfg.judge.seed, progress=False)
    votes, stats = judge_candidates(
        [c.question for c in cands], [c.completion for c in cands], settings
    )
    cells = {"both_accept": 0, "judge_only_accept": 0, "rules_only_accept": 0, "both_reject": 0}
    for c, v in zip(cands, votes, strict=True):
        if v.outcome == "infra_error":
            continue
        judge_acc = v.outcome == "accept"
        key = {(True, True): "both_accept", (True, False): "judge_only_accept"}.get(
            (judge_acc, c.accept), "rules_only_accept" if c.accept else "both_reject"
        )
        cells[key] += 1
    conf = Confusion(**cells)
    figures = {
        "balanced_accuracy": balanced_accuracy(conf),
        "kappa": kappa(conf),
        "false_accept_rate": false_accept_rate(conf),
        "false_reject_rate": false_reject_rate(conf),
        "agreement": agreement(conf),
    }
    return {
        "model": judge_path,
        "confusion": cells,
        "infra_errors": sum(v.outcome == "infra_error" for v in votes),
        "candidates_per_s": stats.get("candidates_per_s"),
        **{k: {"value": f.value, "low": f.low, "high": f.high} for k, f in figures.items()},
    }


def measure(config: Path, runs_dir: Path, candidates: int, variants: list[int]) -> dict:
    from tasks.stages import base_model_stage, judge_model_path, suite_stage

    cfg = load_config(config, runs_dir=str(runs_dir))
    t0 = time.perf_counter()
    suite = suite_stage.fn(cfg)
    policy = base_model_stage.fn(cfg, suite)
    out: dict = {"config": str(config), "policy": policy, "timings_s": {}}
    out["timings_s"]["policy"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    cands = held_out(cfg, suite, policy, candidates)
    out["timings_s"]["held_out"] = time.perf_counter() - t0
    out["held_out"] = {"candidates": len(cands), "rules_accept": sum(c.accept for c in cands)}
    print(f"held-out: {out['held_out']}", flush=True)
    out["judges"] = {}
    for n in variants:
        vcfg = load_config(config, runs_dir=str(runs_dir), **{"judge.policy_samples": n})
        t0 = time.perf_counter()
        path = judge_model_path(vcfg, suite)
        out["timings_s"][f"judge_build_{n}"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        out["judges"][f"policy_samples={n}"] = measure_judge(vcfg, path, cands)
        out["timings_s"][f"judge_votes_{n}"] = time.perf_counter() - t0
        print(f"policy_samples={n}: {json.dumps(out['judges'][f'policy_samples={n}'])}", flush=True)
    return out


def save(result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-judge-policy-qc.json"
    path.write_text(json.dumps(result, indent=2, default=str))
    return path


def cli() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "demo.yaml")
    ap.add_argument("--runs-dir", type=Path, default=Path("/tmp/judge-policy-qc"))
    ap.add_argument("--candidates", type=int, default=2048)
    ap.add_argument(
        "--variants",
        type=int,
        nargs="+",
        help="judge.policy_samples values to build (default: the config's, then 0)",
    )
    args = ap.parse_args()
    variants = args.variants or [load_config(args.config).judge.policy_samples, 0]
    started = time.perf_counter()
    result = measure(args.config, args.runs_dir, args.candidates, variants)
    result["seconds"] = time.perf_counter() - started
    result["target"] = {"balanced_accuracy": TARGET_BALANCED_ACCURACY}
    for name, r in result["judges"].items():
        ba = r["balanced_accuracy"]
        print(
            f"{name}: balanced accuracy {ba['value']} [{ba['low']}, {ba['high']}], "
            f"kappa {r['kappa']['value']}, false accept {r['false_accept_rate']['value']}, "
            f"false reject {r['false_reject_rate']['value']}"
        )
    print(f"results: {save(result)}")


if __name__ == "__main__":
    cli()
