"""Every reward a config gives a consumer can be built and called by that consumer.

Two consumers read reward names from the config: curation (`curation.rewards`, verdicts over
the generated pool, model-scored rewards passed in as precomputed columns the way the curate
stage passes them) and GRPO (`train.grpo.rewards` and each schedule entry's, built the way the
GRPO worker builds TRL's reward functions). For every shipped config, each consumer's rewards
resolve and score a tiny input; a reward a consumer cannot compute is refused when the config
loads, naming the field.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest
import yaml

from tasks.config import ConfigError, FlywheelConfig, load_config
from tasks.curate import rule_settings, sample_verdicts
from tasks.domains import DOMAINS, make_seeds
from tasks.records import Sample, Verdict
from tasks.requests import grpo_request
from tasks.rewards import REWARDS

CONFIGS = sorted(Path(__file__).parents[2].joinpath("configs").glob("*.yaml"))


def _tiny_pool(domain: str) -> list[Sample]:
    """Per seed, a right and a wrong well-formed completion (they differ only in the answer)."""
    seeds = make_seeds(DOMAINS[domain], 2, 1, random.Random(0), set())
    return [
        Sample(
            f"{s.id}-{k}",
            s.id,
            f"Q: {s.question}\n",
            f"<think>{s.question}</think><answer>{answer}</answer>",
            s.answer,
            1,
            k,
            "m",
            12,
            "stop",
        )
        for s in seeds
        for k, answer in enumerate([s.answer, f"{s.answer}9"])
    ]


def _model_columns(rewards: list[str], samples: list[Sample]) -> dict:
    """What the curate stage computes once per pool for the model-scored rewards: the judge's
    verdicts and the reward model's P(accept). Here both agree with the gold answer."""
    right = [s.sample_index == 0 for s in samples]
    cols: dict = {}
    if "judge" in rewards:
        cols["judge_verdict"] = [Verdict("accept" if r else "reject", "stand-in") for r in right]
    if "rm" in rewards:
        cols["rm_score"] = [0.9 if r else 0.1 for r in right]
    return cols


def _curation_cases() -> list:
    cases = [pytest.param(p, [], id=p.name) for p in CONFIGS]
    # The model-scored rewards go through the same columns when a config lists them.
    cases += [pytest.param(p, ["judge", "rm"], id=f"{p.name}+judge+rm") for p in CONFIGS]
    return cases


@pytest.mark.parametrize("path,added", _curation_cases())
def test_curation_builds_every_reward_of_every_config(path, added, tmp_path):
    cfg = load_config(path)
    rewards = cfg.curation.rewards + [r for r in added if r not in cfg.curation.rewards]
    cfg = load_config(
        path,
        **{"curation.rewards": rewards, "curation.reward_model": str(tmp_path / "rm")},
    )
    samples = _tiny_pool(cfg.domain)
    c = cfg.curation
    judged = sample_verdicts(
        samples,
        rewards,
        cfg.domain,
        _model_columns(rewards, samples),
        cfg.judge.combine,
        rule_settings(cfg.sampling.max_tokens, c.length_buffer, c.repetition_ngram),
    )
    for s, (verdict, scores, _rules) in zip(samples, judged, strict=True):
        assert set(scores) == set(rewards)
        assert all(v is None or isinstance(v, float) for v in scores.values())
        # Every reward scores the right answer as good and, where it looks at the answer, the
        # wrong one as bad: the pool is split by the answer, whichever rewards decide.
        want = "accept" if s.sample_index == 0 else "reject"
        assert verdict.outcome == want, (path.name, s.completion, verdict, scores)


def _grpo_reward_sets(cfg: FlywheelConfig) -> dict[str, dict[str, float]]:
    sets = {"train.grpo.rewards": cfg.train.grpo.rewards}
    for i, entry in enumerate(cfg.train.schedule or []):
        if entry.rewards is not None:
            sets[f"train.schedule.{i}.rewards"] = entry.rewards
    return sets


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_grpo_builds_every_reward_of_every_config(path, tmp_path):
    """The reward functions the GRPO worker makes from the train request, called with the
    columns TRL passes (prompts, completions, completion_ids, the dataset's other columns)."""
    from tasks.trainers.grpo import reward_functions

    cfg = load_config(path)
    samples = _tiny_pool(cfg.domain)
    for where, rewards in _grpo_reward_sets(cfg).items():
        req = grpo_request(cfg, 1, "base", tmp_path / "t.parquet", tmp_path / "out")
        funcs = reward_functions(dataclasses.replace(req, rewards=rewards))
        columns = {
            "completion_ids": [[0] * s.num_tokens for s in samples],
            "question": [s.prompt[3:-1] for s in samples],
            "answer": [s.answer for s in samples],
            "domain": [cfg.domain] * len(samples),
            "trainer_state": None,
        }
        totals = [0.0] * len(samples)
        for fn, weight in zip(funcs, rewards.values(), strict=True):
            scores = fn([s.prompt for s in samples], [s.completion for s in samples], **columns)
            assert len(scores) == len(samples), (path.name, where, fn.__name__)
            assert all(v is not None and -1.0 <= v <= 1.0 for v in scores), (where, scores)
            totals = [t + weight * v for t, v in zip(totals, scores, strict=True)]
        for right, wrong in zip(totals[::2], totals[1::2], strict=True):
            assert right > wrong, (path.name, where, totals)


@pytest.mark.parametrize("reward", ["judge", "rm"])
@pytest.mark.parametrize(
    "section,field",
    [
        ({"grpo": {"rewards": {"accuracy": 1.0, "REWARD": 0.5}}}, "train.grpo.rewards"),
        (
            {"schedule": [{"mode": "sft"}, {"mode": "grpo", "rewards": {"REWARD": 1.0}}]},
            "train.schedule.1.rewards",
        ),
    ],
)
def test_grpo_refuses_model_scored_rewards_naming_the_field(tmp_path, reward, section, field):
    """The GRPO worker is given neither the judge's nor the reward model's settings or outputs."""
    text = yaml.safe_dump({"train": section}).replace("REWARD", reward)
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert str(p) in msg and field in msg and f"['{reward}'] cannot score GRPO groups" in msg


def test_curation_rm_needs_the_reward_model_folder(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("curation:\n  rewards: [accuracy, rm]\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert str(p) in msg and "curation" in msg and "reward_model: required" in msg
    cfg = load_config(p, **{"curation.reward_model": "runs/x/reward-model"})
    assert cfg.curation.reward_model == Path("runs/x/reward-model")


def test_every_listed_reward_is_known():
    """The refusal lists exactly the model-scored rewards; the rest stay open to GRPO."""
    from tasks.config import MODEL_REWARDS

    assert set(MODEL_REWARDS) <= set(REWARDS)
    rules = {r: 1.0 for r in REWARDS if r not in MODEL_REWARDS}
    assert FlywheelConfig(train={"grpo": {"rewards": rules}}).train.grpo.rewards == rules
