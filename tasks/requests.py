"""What crosses into a worker process, as frozen dataclasses, each built once from the config.

A stage (or a benchmark, or a test) calls a builder here, hands the request to the worker as
JSON (`to_json`), and the worker rebuilds it with `from_json`, which refuses a missing or an
unknown field by name. The dataclasses declare no defaults: every value comes from the config,
through one builder, under the name it has in the YAML. The requests and their builders live
by job in `tasks.requests_generation` (engine, sampling, generate, judge, bootstraps) and
`tasks.requests_training` (SFT, GKD, GRPO, reward model); this module holds the JSON round trip
and names them all.

Pure: importing this module loads no worker, engine or tracking library.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")


def to_json(request: Any) -> dict:
    """The request as plain JSON values (nested requests become nested dicts)."""
    return dataclasses.asdict(request)


def from_json(cls: type[T], data: dict, where: str = "") -> T:
    """Rebuild a request from `to_json`'s output; a missing or unknown field is an error naming
    it (a request written by another version of the code never half-works)."""
    where = where or cls.__name__
    if not isinstance(data, dict):
        raise TypeError(f"{where}: expected an object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    missing = [n for n in names if n not in data]
    if unknown or missing:
        raise ValueError(f"{where}: unknown fields {unknown}, missing fields {missing}")
    return cls(**{n: _value(hints[n], data[n], f"{where}.{n}") for n in names})


def _value(hint: Any, value: Any, where: str) -> Any:
    """A field's value, rebuilding a nested request (also inside `X | None`)."""
    if typing.get_origin(hint) is list and isinstance(value, list):
        (item,) = typing.get_args(hint)
        return [_value(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for option in options:
        if dataclasses.is_dataclass(option) and isinstance(value, dict):
            return from_json(option, value, where)
    return value


from tasks.requests_generation import (  # noqa: E402
    BootstrapRequest,
    EngineSpec,
    GeneratePass,
    GenerateRequest,
    JudgeBootstrapRequest,
    JudgeRequest,
    JudgeSettings,
    PolicySampling,
    PromptSpec,
    SamplingSpec,
    bootstrap_request,
    engine_spec,
    eval_sampling,
    generate_request,
    greedy_sampling,
    judge_bootstrap_request,
    judge_settings,
    policy_sampling,
    problem_prompt,
    problem_sampling,
    prompt_spec,
    rationalize_sampling,
    sampling_spec,
    served_engine,
)
from tasks.requests_training import (  # noqa: E402
    DPORequest,
    GKDRequest,
    GRPORequest,
    RewardModelRequest,
    RewardModelScoreRequest,
    SFTRequest,
    SupervisedRequest,
    TrainRequest,
    dpo_request,
    gkd_request,
    grpo_request,
    reward_model_request,
    sft_request,
)

__all__ = [
    "BootstrapRequest",
    "DPORequest",
    "EngineSpec",
    "GKDRequest",
    "GRPORequest",
    "GeneratePass",
    "GenerateRequest",
    "JudgeBootstrapRequest",
    "JudgeRequest",
    "JudgeSettings",
    "PolicySampling",
    "PromptSpec",
    "RewardModelRequest",
    "RewardModelScoreRequest",
    "SFTRequest",
    "SamplingSpec",
    "SupervisedRequest",
    "TrainRequest",
    "bootstrap_request",
    "dpo_request",
    "engine_spec",
    "eval_sampling",
    "from_json",
    "generate_request",
    "gkd_request",
    "greedy_sampling",
    "grpo_request",
    "judge_bootstrap_request",
    "judge_settings",
    "policy_sampling",
    "problem_prompt",
    "problem_sampling",
    "prompt_spec",
    "rationalize_sampling",
    "reward_model_request",
    "sampling_spec",
    "served_engine",
    "sft_request",
    "to_json",
]
