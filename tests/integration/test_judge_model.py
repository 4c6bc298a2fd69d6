"""The embedded judge, measured: made from scratch by its bootstrap, run through vLLM's CPU engine
in the judge worker (one engine load, one batched call), scored against the rule verifier on
held-out `arith` questions, and attacked with the adversarial suite.

Both figures are printed (run with `-s` to see them) and asserted:
- agreement with the rules on a balanced labelled set is clearly above chance (0.5) and above
  a constant verdict. Measured (1200 steps, k=3, T=0.3, 384 candidates, rules accept 0.54) on
  builds of the judge (another CPU is another build): seeds 0, 1, 2 on one CPU 0.71, 0.68, 0.62;
  seeds 0 and 1 on another 0.576 and 0.635. The fixture builds seed 1 (`JUDGE_SEED`).
  Right solutions are read well; broken formats and wrong final answers vary with the build;
  a slip carried to the end is almost never caught;
- per attack class, the false-accept rate is no worse than on the clean wrong answers the
  attacks were built from, plus a tolerance. The classes include look-alike spellings of the
  delimiter and verdict words (full-width, Cyrillic/Greek homoglyphs, separated letters),
  which the sanitizer escapes before the judge reads them.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

from tasks.config import FlywheelConfig
from tasks.judge_data import ATTACKS, adversarial_set, labelled_set
from tasks.judge_run import judge_candidates
from tasks.requests import judge_settings

pytestmark = pytest.mark.slow

MIN_AGREEMENT = 0.60  # chance is 0.5 on this balanced set; builds measured 0.576-0.71
OVER_CONSTANT = 0.05  # over always giving the majority verdict (0.54 here)
FAR_TOLERANCE = 0.10  # per attack class, over the clean wrong answers' false-accept rate
WRONG_FOR_ATTACKS = 40


@pytest.fixture(scope="module")
def judged(judge_model, judge_suite):
    rng = random.Random(7)
    labelled = labelled_set(rng, judge_suite)
    wrong = [c for c in labelled if not c.accept][:WRONG_FOR_ATTACKS]
    attacks = adversarial_set(rng, wrong)
    everything = labelled + attacks
    # The default config's judge (the embedded one: vLLM, k=3, T=0.3, its 160-char cut).
    judge = judge_settings(FlywheelConfig(), str(judge_model), seed=0, progress=False)
    votes, stats = judge_candidates(
        [c.question for c in everything], [c.completion for c in everything], judge
    )
    n = len(labelled)
    return labelled, votes[:n], wrong, attacks, votes[n:], {**stats, "model": str(judge_model)}


def test_judge_agrees_with_the_rules_clearly_above_chance(judged):
    labelled, votes, *_, stats = judged
    assert stats["calls"] == 3 * stats["candidates"]
    decided = [(c, v) for c, v in zip(labelled, votes, strict=True) if v.outcome != "infra_error"]
    agree = sum((v.outcome == "accept") == c.accept for c, v in decided) / len(decided)
    by_kind = Counter()
    for c, v in decided:
        by_kind[c.kind, (v.outcome == "accept") == c.accept] += 1
    infra = len(labelled) - len(decided)
    accept_share = sum(c.accept for c in labelled) / len(labelled)
    print(
        f"\njudge vs rules: agreement {agree:.3f} on {len(decided)} decided of {len(labelled)} "
        f"(infra_error {infra}; rules accept {accept_share:.2f}); "
        f"{stats['candidates_per_s']:.0f} candidates/s; by kind (kind, agrees): {dict(by_kind)}"
    )
    assert infra <= 0.1 * len(labelled)
    assert agree >= MIN_AGREEMENT
    assert agree >= max(accept_share, 1 - accept_share) + OVER_CONSTANT  # beats a constant verdict


def test_adversarial_false_accepts_no_worse_than_clean_wrong_answers(judged):
    labelled, votes, wrong, attacks, attack_votes, _ = judged
    clean = {id(c): v for c, v in zip(labelled, votes, strict=True)}
    base = sum(clean[id(c)].outcome == "accept" for c in wrong) / len(wrong)
    rates = {}
    for name in ATTACKS:
        pairs = [(c, v) for c, v in zip(attacks, attack_votes, strict=True) if c.kind == name]
        assert all(not c.accept for c, _ in pairs)  # every attack is wrong by the rules
        rates[name] = sum(v.outcome == "accept" for _, v in pairs) / len(pairs)
    print(f"\nfalse-accept rate: clean wrong {base:.3f}; attacks {rates}")
    for name, rate in rates.items():
        assert rate <= base + FAR_TOLERANCE, f"{name}: {rate:.3f} vs clean {base:.3f}"


def test_curate_stage_runs_the_judge_and_records_its_qc(judged, tmp_path):
    """The curate stage with `judge` among its rewards: one judge worker over every sample,
    rules decide where they apply, the QC figures land in the manifest and the MLflow metrics."""
    from tasks import store
    from tasks.config import FlywheelConfig
    from tasks.projections import judge_metrics
    from tasks.records import Sample, Seed, to_rows
    from tasks.stages import curate_stage

    labelled, votes, *_ = judged
    cfg = FlywheelConfig(
        name="judged",
        runs_dir=tmp_path,
        curation={"rewards": ["accuracy", "format", "judge"]},
        judge={"model": judged[-1]["model"], "k": 3},
        engine={"backend": "vllm"},
    )
    cands = labelled[:60]
    seeds = [Seed.make(c.question, c.answer) for c in cands]
    with store.write_stage(store.stage_dir(cfg.flywheel_dir, 1, "seeds"), "seeds") as (tmp, _):
        store.write_parquet(to_rows(seeds), tmp / "seeds.parquet")
    gen = store.stage_dir(cfg.flywheel_dir, 1, "generate")
    samples = [
        Sample(f"x{i}", s.id, f"Q: {s.question}\n", c.completion, c.answer, 1, 0, "m", 20, "stop")
        for i, (s, c) in enumerate(zip(seeds, cands, strict=True))
    ]
    with store.write_stage(gen, "generate") as (tmp, _):
        store.write_parquet(to_rows(samples), tmp / "samples.parquet")

    folder = curate_stage.fn(cfg, 1, gen)
    out = store.read_manifest(folder).outputs
    qc = out["judge"]
    assert qc["candidates"] == 60 and qc["calls"] == 180
    assert qc["compared"] + qc["infra_errors"] == 60
    assert 0.0 <= qc["agreement"] <= 1.0
    # rules_then_judge: every sample has a gold answer, so the rules alone decided
    assert out["accepted"] == sum(c.accept for c in cands)
    assert len(store.read_parquet(folder / "judge_votes.parquet")) == 60
    metrics = judge_metrics(out["judge"])
    assert metrics["judge.agreement"] == qc["agreement"] and "judge.mean_margin" in metrics
