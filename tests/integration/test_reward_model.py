"""The scalar reward model: trained by `flywheel train-rm` from a flywheel's curated samples,
scored in its worker, used through the `rm` reward; its agreement is reported."""

from __future__ import annotations

import json
import random

import pytest
from typer.testing import CliRunner

from flows.cli import app
from tasks import store
from tasks.judge_data import fresh_candidates
from tasks.records import Sample, to_rows
from tasks.reward_model import rm_scores
from tasks.rewards import REWARDS

pytestmark = pytest.mark.slow


def test_train_rm_learns_from_curated_samples_and_serves_as_a_reward(tmp_path):
    cands = fresh_candidates(random.Random(0), 600, [1, 2])
    fw = tmp_path / "runs" / "rm"
    samples = [
        Sample(f"s{i}", f"q{i}", f"Q: {c.question}\n", c.completion, c.answer, 1, 0, "m", 9, "stop")
        for i, c in enumerate(cands)
    ]
    gen = store.stage_dir(fw, 1, "generate")
    with store.write_stage(gen, "generate") as (tmp, _):
        store.write_parquet(to_rows(samples), tmp / "samples.parquet")
    rows = [
        {"sample_id": s.id, "outcome": "accept" if c.accept else "reject"}
        for s, c in zip(samples, cands, strict=True)
    ]
    with store.write_stage(store.stage_dir(fw, 1, "curate"), "curate") as (tmp, _):
        store.write_parquet(rows, tmp / "verdicts.parquet")
    config = tmp_path / "c.yaml"
    config.write_text(f"name: rm\nruns_dir: {tmp_path / 'runs'}\n")

    result = CliRunner().invoke(app, ["train-rm", str(config), "--steps", "150"])
    assert result.exit_code == 0, result.output
    report = json.loads((fw / "reward-model" / "report.json").read_text())
    print(f"\nreward model: {report}")
    assert report["final_loss"] < report["first_loss"]
    assert report["held_out"] > 50 and report["agreement_curation"] > 0.5
    assert report["agreement_judge"] is None  # no judge votes in this flywheel

    fn, verdicts = REWARDS["rm"]
    probe = [samples[0].completion, "garbage"]
    prompts = ["Q: 1+2\n"] * 2
    scores = fn(prompts, probe, rm_score=rm_scores(str(fw / "reward-model"), prompts, probe))
    assert all(0.0 <= p <= 1.0 for p in scores)
    assert [v.outcome for v in verdicts(probe, rm_score=scores)] == [
        "accept" if p >= 0.5 else "reject" for p in scores
    ]

    _curate_with_the_reward_model(tmp_path, fw / "reward-model", samples[:40])


def _curate_with_the_reward_model(tmp_path, rm_dir, samples):
    """`curation.rewards: [rm]` with `curation.reward_model`: the curate stage scores the pool
    once and every verdict is the reward model's (P >= 0.5 accepts)."""
    from tasks.config import FlywheelConfig
    from tasks.stages import curate_stage

    cfg = FlywheelConfig(
        name="rm-curate",
        runs_dir=tmp_path / "curate",
        curation={"rewards": ["rm"], "reward_model": str(rm_dir), "max_per_seed": 100},
        hygiene={"near_dup": None},
    )
    gen = store.stage_dir(cfg.flywheel_dir, 1, "generate")
    with store.write_stage(gen, "generate") as (tmp, _):
        store.write_parquet(to_rows(samples), tmp / "samples.parquet")
    folder = curate_stage.fn(cfg, 1, gen)

    want = rm_scores(str(rm_dir), [s.prompt for s in samples], [s.completion for s in samples])
    rows = {r["sample_id"]: r for r in store.read_parquet(folder / "verdicts.parquet")}
    for s, p in zip(samples, want, strict=True):
        assert rows[s.id]["reward_rm"] == pytest.approx(float(p >= 0.5))
        assert rows[s.id]["outcome"] == ("accept" if p >= 0.5 else "reject")
    out = store.read_manifest(folder).outputs
    assert out["counts"].get("accept", 0) == sum(p >= 0.5 for p in want)

    missing = cfg.model_copy(
        update={"curation": cfg.curation.model_copy(update={"reward_model": tmp_path / "no"})}
    )
    with pytest.raises(FileNotFoundError, match="curation.reward_model: .*no is not a reward"):
        curate_stage.fn(missing, 2, gen)
