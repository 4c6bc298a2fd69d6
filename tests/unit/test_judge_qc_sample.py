"""Judge QC on a sample (`judge.qc_sample`): the judge sees every sample whose verdict it decides
and a seeded, fixed-size draw of the rest; QC figures, votes and counts cover what it saw. The
curate stage runs on files in a temporary folder with the judge worker stood in for."""

from __future__ import annotations

import pytest

from tasks import store
from tasks.config import FlywheelConfig
from tasks.judge import JudgeVote
from tasks.judge_qc import balanced_accuracy, confusion, qc_selection
from tasks.records import Sample, Seed, Verdict, to_rows
from tasks.stages import curate as curate_module

RIGHT = "<think>1+2=3</think><answer>3</answer>"
WRONG = "<think>1+2=4</think><answer>4</answer>"
SEEDS = [Seed.make("1+2", "3"), Seed.make("2+1", None)]  # the second has no gold answer


def samples(n: int, no_gold_every: int = 5) -> list[Sample]:
    """n samples; every `no_gold_every`-th one from the seed without a gold answer."""
    out = []
    for i in range(n):
        seed = SEEDS[i % no_gold_every == 0]
        text = RIGHT if i % 3 else WRONG
        out.append(Sample(f"id{i}", seed.id, "Q\n", text, seed.answer, 1, i, "m", 10, "stop"))
    return out


def run_stage(tmp_path, monkeypatch, items: list[Sample], name: str = "qc", **judge) -> dict:
    """The curate stage over `items`; the judge accepts what it sees. Returns the manifest's
    outputs plus the sample ids the judge saw and the votes file's ids."""
    cfg = FlywheelConfig(
        name=name,
        runs_dir=tmp_path,
        curation={"rewards": ["accuracy", "format", "judge"]},
        judge={"model": "/models/judge", **judge},
    )
    with store.write_stage(store.stage_dir(cfg.flywheel_dir, 1, "seeds"), "seeds") as (tmp, _):
        store.write_parquet(to_rows(SEEDS), tmp / "seeds.parquet")
    gen = store.stage_dir(cfg.flywheel_dir, 1, "generate")
    with store.write_stage(gen, "generate") as (tmp, _):
        store.write_parquet(to_rows(items), tmp / "samples.parquet")
    seen: list[str] = []

    def judge_candidates(questions, completions, settings, log=None):  # the worker, stood in for
        seen.extend(completions)
        vote = JudgeVote("accept", "judge_accept_1of1", 1, 0, 0, 1.0)
        stats = dict.fromkeys(("calls", "seconds", "engine_load_s", "tokens_per_s"), 1.0)
        stats |= dict.fromkeys(("wall_s", "cpu_s", "candidates_per_s"), 1.0)
        return [vote] * len(questions), {**stats, "rubric_version": "v"}

    monkeypatch.setattr(curate_module, "judge_candidates", judge_candidates)
    monkeypatch.setattr(curate_module, "judge_model_path", lambda cfg, suite: cfg.judge.model)
    folder = curate_module.curate_stage.fn(cfg, 1, gen)
    out = store.read_manifest(folder).outputs
    out["votes"] = [r["sample_id"] for r in store.read_parquet(folder / "judge_votes.parquet")]
    out["rows"] = store.read_parquet(folder / "verdicts.parquet")
    out["seen"] = len(seen)
    return out


# -- the selection -------------------------------------------------------------------------------
def test_selection_keeps_every_decided_candidate_and_draws_the_rest():
    decides = [i % 4 == 0 for i in range(400)]  # 100 decided, 300 for QC
    picked = qc_selection(decides, 50, seed=7)
    assert len(picked) == 150 and picked == sorted(set(picked))
    assert {i for i in range(400) if decides[i]} <= set(picked)
    assert qc_selection(decides, 50, seed=7) == picked  # seeded: a rerun judges the same
    assert qc_selection(decides, 50, seed=8) != picked  # the next generation draws anew


@pytest.mark.parametrize("size", [None, 300, 10_000])
def test_no_sample_or_one_as_big_as_the_rest_judges_everything(size):
    decides = [i % 4 == 0 for i in range(400)]
    assert qc_selection(decides, size, seed=0) == list(range(400))


# -- the curate stage ----------------------------------------------------------------------------
def test_the_stage_judges_the_no_gold_samples_and_a_fixed_size_draw(tmp_path, monkeypatch):
    items = samples(200)  # 40 without gold, 160 the rules check
    out = run_stage(tmp_path, monkeypatch, items, qc_sample=30)
    qc = out["judge"]
    assert (qc["qc_sample"], qc["samples"], qc["judged"], qc["decided"]) == (30, 200, 70, 40)
    assert out["seen"] == qc["candidates"] == len(out["votes"]) == 70
    no_gold = {s.id for s in items if s.answer is None}
    assert no_gold <= set(out["votes"])
    assert qc["compared"] == 30  # QC compares only where the rules have a verdict
    # Verdicts: the judge decides the no-gold samples; the rules all the others, judged or not.
    by_id = {r["sample_id"]: r for r in out["rows"]}
    assert all(by_id[i]["outcome"] == "accept" for i in no_gold)
    for s in items:
        if s.answer is not None:
            assert by_id[s.id]["outcome"] == ("accept" if s.completion == RIGHT else "reject")
            assert (by_id[s.id]["reward_judge"] is None) == (s.id not in out["votes"])
    again = run_stage(tmp_path, monkeypatch, items, name="qc-again", qc_sample=30)
    assert again["votes"] == out["votes"]  # the same seed draws the same sample
    other = run_stage(tmp_path, monkeypatch, items, name="qc-seed", qc_sample=30, seed=5)
    assert other["votes"] != out["votes"]


@pytest.mark.parametrize(
    "judge,judged",
    [
        ({"qc_sample": None}, 200),  # today's behaviour: every candidate
        ({"qc_sample": 30, "combine": "both"}, 200),  # the judge decides every sample
        ({"qc_sample": 30, "combine": "judge_only"}, 200),
        ({"qc_sample": 1000}, 200),
    ],
)
def test_modes_where_the_judge_decides_everything_judge_everything(
    tmp_path, monkeypatch, judge, judged
):
    qc = run_stage(tmp_path, monkeypatch, samples(200), **judge)["judge"]
    assert qc["judged"] == qc["candidates"] == judged


def test_the_interval_reflects_the_sample():
    """A judge right on 90 % of each class, measured on a 1024-candidate draw of 16,384 (the
    rules accept 10 %): the balanced accuracy interval widens about sqrt(16) = 4 times and
    still holds the value on all of them."""
    n = 16_384
    rules = [Verdict("accept" if i % 10 == 0 else "reject", "r") for i in range(n)]
    flip = {"accept": "reject", "reject": "accept"}
    votes = [
        JudgeVote(flip[r.outcome] if (i // 10) % 10 == 0 else r.outcome, "v", 1, 0, 0, 1.0)
        for i, r in enumerate(rules)
    ]
    full = balanced_accuracy(confusion(votes, rules))
    picked = qc_selection([False] * n, 1024, seed=0)
    part = balanced_accuracy(confusion([votes[i] for i in picked], [rules[i] for i in picked]))
    assert full.value == pytest.approx(0.9, abs=0.01)
    assert 3 < (part.high - part.low) / (full.high - full.low) < 5
    assert part.low < full.value < part.high
