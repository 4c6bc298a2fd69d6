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
    scores = fn(["Q: 1+2\n"] * 2, probe, rm_model=str(fw / "reward-model"))
    assert all(0.0 <= p <= 1.0 for p in scores)
    assert [v.outcome for v in verdicts(probe, rm_score=scores)] == [
        "accept" if p >= 0.5 else "reject" for p in scores
    ]
