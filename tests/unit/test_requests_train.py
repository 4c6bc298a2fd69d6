"""Training requests: every shipped config builds every request its train modes can ask for,
each crosses into the worker as JSON and comes back unchanged, and no value is renamed or
defaulted on the way."""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path

import pytest

from tasks.config import FlywheelConfig, load_config
from tasks.requests import (
    DPORequest,
    GKDRequest,
    GRPORequest,
    RewardModelRequest,
    RewardModelScoreRequest,
    SFTRequest,
    TrainRequest,
    dpo_request,
    from_json,
    gkd_request,
    grpo_request,
    reward_model_request,
    sft_request,
    to_json,
)
from tasks.train import REQUESTS, main

CONFIGS = sorted(Path(__file__).parents[2].joinpath("configs").glob("*.yaml"))
REQUEST_TYPES = [
    SFTRequest,
    GKDRequest,
    GRPORequest,
    DPORequest,
    RewardModelRequest,
    RewardModelScoreRequest,
]


def _requests(path: Path) -> list:
    """Every training request of every generation's recipe in the config at `path` (one past
    the schedule's end: the last entry repeats), then SFT's and GRPO's in any case (a mode may
    be set on the command line) and GKD's, with a teacher where the file names none."""
    cfg = load_config(path)
    out = []
    for generation in range(1, len(cfg.train.schedule or []) + 2):
        mode = cfg.train.stage(generation).mode
        args = (cfg, generation, "base", Path("train.parquet"), Path("model"))
        if mode in ("sft", "sft_then_grpo"):
            out.append(sft_request(*args))
        if mode in ("grpo", "sft_then_grpo"):
            out.append(grpo_request(*args))
        if mode == "gkd":
            out.append(gkd_request(*args))
        if mode == "dpo":
            out.append(dpo_request(*args))
    out += [sft_request(*args), grpo_request(*args), dpo_request(*args)]
    if cfg.train.gkd.teacher is None and not cfg.distill.teachers:
        cfg = load_config(path, **{"train.gkd.teacher": "teacher"})
    out.append(gkd_request(cfg, *args[1:]))
    return out


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_builds_every_training_request_and_it_round_trips(path):
    requests = _requests(path)
    assert {type(r) for r in requests} == {SFTRequest, GRPORequest, GKDRequest, DPORequest}
    for request in requests:
        # As `train_in_subprocess` sends it: the mode next to the fields, as JSON text.
        wire = json.loads(json.dumps({"mode": request.mode, **to_json(request)}))
        cls = REQUESTS[wire.pop("mode")]
        assert cls is type(request)
        assert from_json(cls, wire) == request


def test_the_config_values_reach_the_request_under_their_names():
    cfg = FlywheelConfig.model_validate(
        {
            "train": {
                "seed": 7,
                "packing": True,
                "min_lr_ratio": 0.2,
                "grpo": {"repetition_ngram": 5, "max_completion_length": 77, "length_buffer": 9},
                "gkd": {"teacher": "t", "lmbda": 0.25},
                "dpo": {"loss_type": "sigmoid_norm", "beta": 0.3, "learning_rate": 2e-5},
            },
            "model": {"system_prompt": "be brief", "chat_template": True},
        }
    )
    grpo = grpo_request(cfg, 2, "base", Path("t.parquet"), Path("out"))
    assert (grpo.repetition_ngram, grpo.max_completion_length, grpo.length_buffer) == (5, 77, 9)
    assert grpo.system_prompt == "be brief" and grpo.chat_template and grpo.seed == 9
    assert grpo.learning_rate == cfg.train.grpo.learning_rate != cfg.train.learning_rate
    sft = sft_request(cfg, 2, "base", Path("t.parquet"), Path("out"))
    assert sft.packing and sft.min_lr_ratio == 0.2 and sft.seed == 9
    gkd = gkd_request(cfg, 1, "base", Path("t.parquet"), Path("out"))
    assert gkd.teacher == "t" and gkd.lmbda == 0.25
    assert not {"packing", "min_lr_ratio"} & {f.name for f in dataclasses.fields(GKDRequest)}
    dpo = dpo_request(cfg, 2, "base", Path("p.parquet"), Path("out"))
    assert (dpo.loss_type, dpo.beta, dpo.learning_rate, dpo.seed) == ("sigmoid_norm", 0.3, 2e-5, 9)
    # Each section's worker settings reach the request under their YAML names (the rest are the
    # stage's: which rows, which recipe, which teacher source).
    stage_only = {"mode", "schedule", "build_on", "start_from", "replay", "replay_share"}
    stage_only |= {"grpo", "gkd", "dpo"}
    for section, cls in [
        (cfg.train, SFTRequest),
        (cfg.train.grpo, GRPORequest),
        (cfg.train.gkd, GKDRequest),
        (cfg.train.dpo, DPORequest),
    ]:
        names = set(type(section).model_fields) - stage_only - {"max_prompts", "pairs_per_seed"}
        assert names <= _fields(cls), (cls.__name__, names - _fields(cls))


def _fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


@pytest.mark.parametrize("cls", REQUEST_TYPES, ids=lambda c: c.__name__)
def test_no_request_declares_a_default(cls):
    for f in dataclasses.fields(cls):
        assert f.default is dataclasses.MISSING, f.name
        assert f.default_factory is dataclasses.MISSING, f.name
    assert cls.__dataclass_params__.frozen


def test_the_worker_knows_every_training_request_by_its_mode():
    assert set(REQUESTS.values()) == set(typing.get_args(TrainRequest))
    assert sorted(REQUESTS) == ["dpo", "gkd", "grpo", "sft"]


def test_reward_model_request_round_trips():
    request = reward_model_request(Path("rm.parquet"), Path("rm"), 150)
    assert request.steps == 150 and request.train_file == "rm.parquet"
    assert from_json(RewardModelRequest, to_json(request)) == request


def test_the_worker_names_a_missing_or_unknown_field():
    data = to_json(sft_request(FlywheelConfig(), 1, "b", Path("t"), Path("o")))
    data.pop("packing")
    with pytest.raises(ValueError, match=r"SFTRequest: unknown fields \['ngram'\].*'packing'"):
        main({"mode": "sft", **data, "ngram": 3})
    with pytest.raises(ValueError, match="unknown training mode 'ppo'"):
        main({"mode": "ppo"})
