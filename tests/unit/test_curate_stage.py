"""The curate stage's wiring: configured rule settings reach the rewards, and the judge's QC
figures count the candidates it saw cut. File I/O in a temporary folder; no model runs (the
judge's votes are stood in for)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tasks import store
from tasks.config import ConfigError, FlywheelConfig, load_config
from tasks.curate import curate, rule_settings
from tasks.judge import JudgeVote
from tasks.records import Sample, Seed, to_rows
from tasks.requests import to_json
from tasks.stages import curate as curate_module

OK = "<think>1+2=3</think><answer>3</answer>"


def sample(i: int, tokens: int, completion: str = OK) -> Sample:
    return Sample(f"id{i}", f"s{i}", "Q: 1+2\n", completion, "3", 1, 0, "m", tokens, "stop")


def run_curate(cfg: FlywheelConfig, samples: list[Sample]) -> dict:
    gen = store.stage_dir(cfg.flywheel_dir, 1, "generate")
    with store.write_stage(gen, "generate") as (tmp, _):
        store.write_parquet(to_rows(samples), tmp / "samples.parquet")
    folder = curate_module.curate_stage.fn(cfg, 1, gen)
    out = store.read_manifest(folder).outputs
    out["rows"] = store.read_parquet(folder / "verdicts.parquet")
    return out


# -- length and repetition use the configured limits -------------------------------------------
@pytest.mark.parametrize(
    "max_tokens,tokens,outcome",
    [
        (2048, 1000, "accept"),  # past the reward module's default limit (512), inside 2048
        (2048, 1930, "reject"),  # inside the buffer before 2048
        (400, 380, "reject"),  # inside the default limit's budget, past 400 - 128
        (400, 272, "accept"),
    ],
)
def test_length_rule_measures_against_the_configured_max_tokens(
    tmp_path, max_tokens, tokens, outcome
):
    cfg = FlywheelConfig(
        runs_dir=tmp_path,
        sampling={"max_tokens": max_tokens},
        curation={"rewards": ["accuracy", "format", "length"], "length_buffer": 128},
    )
    out = run_curate(cfg, [sample(0, tokens)])
    row = out["rows"][0]
    assert row["outcome"] == outcome
    assert row["reason"] == ("all_rewards_passed" if outcome == "accept" else "length:overlong")


def test_repetition_rule_uses_the_configured_ngram(tmp_path):
    # No word trigram repeats, but `a` repeats as a unigram in 3 of 9 words.
    text = "<think>a b a c a d a e</think><answer>3</answer>"
    outcomes = {}
    for n in (1, 3):
        cfg = FlywheelConfig(
            name=f"rep{n}",
            runs_dir=tmp_path,
            curation={"rewards": ["accuracy", "format", "repetition"], "repetition_ngram": n},
        )
        outcomes[n] = run_curate(cfg, [sample(0, 10, text)])["rows"][0]["outcome"]
    assert outcomes == {1: "reject", 3: "accept"}


def test_rule_settings_reach_only_their_own_reward():
    settings = rule_settings(max_tokens=300, length_buffer=10, repetition_ngram=2)
    assert settings == {
        "length": {"length_limit": 300, "length_buffer": 10},
        "repetition": {"ngram": 2},
    }
    r = curate([sample(0, 295)], ["accuracy", "length"], "arith", 4, settings=settings)
    assert r.rows[0]["reason"] == "length:overlong"
    r = curate([sample(0, 289)], ["accuracy", "length"], "arith", 4, settings=settings)
    assert r.rows[0]["outcome"] == "accept"


def test_a_length_buffer_over_max_tokens_is_a_config_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("sampling: {max_tokens: 96}\ncuration: {rewards: [accuracy, length]}\n")
    with pytest.raises(ConfigError, match="curation.length_buffer"):
        load_config(path)
    assert load_config(path, **{"curation.length_buffer": 32}).curation.length_buffer == 32
    path.write_text("sampling: {max_tokens: 96}\n")  # no length reward: the buffer is unused
    assert load_config(path).curation.length_buffer == 128


# -- the judge's QC counts cut candidates ----------------------------------------------------------
@pytest.mark.parametrize(
    "judge,cut,max_chars",
    [
        ({}, 2, 160),  # the bootstrap judge: 160
        ({"max_candidate_chars": 30}, 3, 30),
        ({"max_candidate_chars": 1000}, 0, 1000),
        ({"model": "/models/judge", "max_model_len": 4096}, 0, None),  # derived: thousands
    ],
)
def test_judge_qc_counts_candidates_cut_before_judging(
    tmp_path, monkeypatch, judge, cut, max_chars
):
    cfg = FlywheelConfig(
        runs_dir=tmp_path, curation={"rewards": ["accuracy", "format", "judge"]}, judge=judge
    )
    long_ok = "<think>" + "1+0=1\n" * 30 + "1+2=3</think><answer>3</answer>"  # 204 chars
    samples = [sample(0, 10), sample(1, 60, long_ok), sample(2, 60, long_ok + " ")]
    seed = Seed.make("1+2", "3")
    samples = [replace(s, seed_id=seed.id) for s in samples]
    with store.write_stage(store.stage_dir(cfg.flywheel_dir, 1, "seeds"), "seeds") as (tmp, _):
        store.write_parquet(to_rows([seed]), tmp / "seeds.parquet")
    seen = {}

    def judge_candidates(questions, completions, settings, log=None):  # the worker, stood in for
        seen.update(to_json(settings), questions=questions)
        vote = JudgeVote("accept", "judge_accept_1of1", 1, 0, 0, 1.0)
        stats = dict.fromkeys(("calls", "seconds", "engine_load_s", "tokens_per_s"), 1.0)
        stats |= dict.fromkeys(("wall_s", "cpu_s"), 1.0)
        return [vote] * len(questions), {**stats, "candidates_per_s": 1.0, "rubric_version": "v"}

    monkeypatch.setattr(curate_module, "judge_candidates", judge_candidates)
    monkeypatch.setattr(curate_module, "judge_model_path", lambda cfg, suite: cfg.judge.model)
    qc = run_curate(cfg, samples)["judge"]
    assert seen["questions"] == ["1+2"] * 3
    if max_chars is None:  # derived from the judge's context: thousands of characters
        assert seen["max_candidate_chars"] == cfg.judge.candidate_chars() > 1000
    else:
        assert seen["max_candidate_chars"] == max_chars
    assert (qc["cut"], qc["cut_share"]) == (cut, pytest.approx(cut / 3))
