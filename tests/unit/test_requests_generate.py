"""Generation and judging requests: every shipped config builds each of them, each survives the
JSON trip to its worker unchanged, a wrong or missing field is named, and no request dataclass
carries a default of its own (every value comes from the config, through one builder)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from tasks import requests as rq
from tasks.config import FlywheelConfig, ServedTeacher, load_config
from tasks.records import Sample

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def every_request(cfg: FlywheelConfig) -> dict[str, object]:
    """Each generation and judging request a flywheel of `cfg` sends to a worker."""
    q, raw = Path("questions.parquet"), Path("raw.parquet")
    built: dict[str, object] = {
        "generate": rq.generate_request(cfg, "/policy", rq.sampling_spec(cfg, 2), q, raw),
        "eval": rq.generate_request(cfg, "/policy", rq.eval_sampling(cfg), q, raw),
        "eval with its greedy pass": rq.generate_request(
            cfg, "/policy", rq.eval_sampling(cfg), q, raw, also=[(rq.greedy_sampling(cfg), raw)]
        ),
        "model problems": rq.generate_request(
            cfg, "/policy", rq.problem_sampling(cfg, 2), q, raw, prompt=rq.problem_prompt(cfg)
        ),
        "judge": rq.JudgeRequest(rq.judge_settings(cfg, "/judge", cfg.judge.seed + 2), "c", "v"),
        "bootstrap": rq.bootstrap_request(cfg, ["1+2", "3*4"]),
        "judge bootstrap": rq.judge_bootstrap_request(cfg, ["1+2"], "/policy"),
    }
    for i, teacher in enumerate(cfg.distill.teachers):
        engine = rq.served_engine(cfg, teacher) if isinstance(teacher, ServedTeacher) else None
        built[f"teacher {i}"] = rq.generate_request(
            cfg, str(teacher), rq.sampling_spec(cfg, 2), q, raw, engine=engine, template="reflect"
        )
    return built


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_builds_every_request_and_each_round_trips(path):
    cfg = load_config(path)
    for name, request in every_request(cfg).items():
        data = json.loads(json.dumps(rq.to_json(request)))  # what the worker reads
        assert rq.from_json(type(request), data) == request, name


def test_the_demo_requests_carry_the_config_under_its_names():
    cfg = load_config(next(p for p in CONFIGS if p.name == "demo.yaml"))
    built = every_request(cfg)
    gen, judge = built["generate"], built["judge"]
    assert gen.engine.backend == cfg.engine.backend and gen.sampling.seed == cfg.sampling.seed + 2
    assert gen.prompt.prompt_template == cfg.model.prompt_template
    assert built["model problems"].prompt.prompt_template == "{question}"
    assert built["model problems"].sampling.n == cfg.seeds.model_samples
    greedy = built["eval with its greedy pass"].also[0].sampling
    assert (built["eval"].sampling.n, greedy.n, greedy.temperature) == (cfg.eval.k, 1, 0.0)
    j = judge.judge
    assert (j.engine.backend, j.engine.max_model_len) == (
        cfg.judge.backend,
        cfg.judge.max_model_len,
    )
    assert (j.sampling.n, j.sampling.temperature) == (cfg.judge.k, cfg.judge.temperature)
    assert j.max_candidate_chars == cfg.judge.candidate_chars()
    boot = built["judge bootstrap"]
    assert boot.policy_samples == cfg.judge.policy_samples > 0 and boot.policy == "/policy"
    assert boot.policy_sampling == rq.policy_sampling(cfg)
    assert built["bootstrap"].exclude == ["1+2", "3*4"]


def test_sampling_json_is_the_params_dict_sample_ids_hash():
    """The generate stage hashes `to_json(sampling_spec(...))` into every sample id: the same
    keys and values as the dict built before the specs, so a flywheel's ids stay as they were."""
    cfg = FlywheelConfig()
    params = rq.to_json(rq.sampling_spec(cfg, 3))
    assert params == {"n": 8, "temperature": 1.0, "top_p": 1.0, "max_tokens": 96, "seed": 3}
    assert list(params) == ["n", "temperature", "top_p", "max_tokens", "seed"]
    assert Sample.make_id(3, "s", 0, "/m", params) == "8e6e42a61e46c25c"  # as before the specs


def test_a_served_teacher_gets_its_endpoint_and_a_served_judge_the_environment():
    served = {"name": "big", "backend": "openai", "base_url": "http://h:1/v1", "model": "m"}
    cfg = FlywheelConfig(
        distill={"teachers": [{**served, "api_key_env": "BIG_KEY"}]},
        judge={"model": "j", "backend": "openai"},
    )
    engine = rq.served_engine(cfg, cfg.distill.teachers[0])
    assert (engine.backend, engine.base_url, engine.api_key_env) == (
        "openai",
        "http://h:1/v1",
        "BIG_KEY",
    )
    assert engine.dtype == cfg.engine.dtype
    judge = rq.judge_settings(cfg, "j", 0).engine
    assert (judge.backend, judge.base_url, judge.api_key_env) == ("openai", None, None)


def test_judge_bootstrap_without_policy_samples_names_no_policy():
    cfg = FlywheelConfig(judge={"policy_samples": 0})
    req = rq.judge_bootstrap_request(cfg, [], "/policy")
    assert (req.policy, req.policy_samples, req.policy_sampling) == (None, 0, None)
    with pytest.raises(ValueError, match="judge.policy_samples > 0 needs the base policy"):
        rq.judge_bootstrap_request(FlywheelConfig(), [], None)


@pytest.mark.parametrize(
    "change,error",
    [
        (lambda d: d | {"tempreature": 1.0}, r"GenerateRequest: unknown fields \['tempreature'\]"),
        (
            lambda d: {k: v for k, v in d.items() if k != "out_file"},
            r"GenerateRequest: unknown fields \[\], missing fields \['out_file'\]",
        ),
        (
            lambda d: d | {"sampling": {k: v for k, v in d["sampling"].items() if k != "seed"}},
            r"GenerateRequest.sampling: unknown fields \[\], missing fields \['seed'\]",
        ),
        (
            lambda d: d | {"engine": d["engine"] | {"dtpye": "float32"}},
            r"GenerateRequest.engine: unknown fields \['dtpye'\]",
        ),
    ],
)
def test_from_json_names_an_unknown_or_missing_field(change, error):
    cfg = FlywheelConfig()
    request = rq.generate_request(cfg, "/m", rq.sampling_spec(cfg, 1), Path("q"), Path("o"))
    with pytest.raises(ValueError, match=error):
        rq.from_json(rq.GenerateRequest, change(rq.to_json(request)))


def test_judge_request_names_a_nested_unknown_field():
    settings = rq.to_json(rq.judge_settings(FlywheelConfig(), "/j", 0))
    data = {"judge": settings | {"k": 3}, "candidates_file": "c", "out_file": "v"}
    with pytest.raises(ValueError, match=r"JudgeRequest.judge: unknown fields \['k'\]"):
        rq.from_json(rq.JudgeRequest, data)


def test_no_request_dataclass_declares_a_default():
    classes = [
        v
        for v in vars(rq).values()
        if dataclasses.is_dataclass(v) and v.__module__.startswith(rq.__name__)
    ]
    assert {"EngineSpec", "SamplingSpec", "GenerateRequest", "JudgeRequest"} <= {
        c.__name__ for c in classes
    }
    defaults = [
        f"{c.__name__}.{f.name}"
        for c in classes
        for f in dataclasses.fields(c)
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    ]
    assert defaults == []


def test_thread_settings_reach_their_workers():
    cfg = FlywheelConfig(engine={"cpu_threads": 1}, bootstrap={"cpu_threads": 2})
    assert rq.engine_spec(cfg).cpu_threads == 1
    assert rq.judge_settings(cfg, "/judge", 0).engine.cpu_threads == 1
    assert rq.bootstrap_request(cfg, []).cpu_threads == 2
    assert rq.judge_bootstrap_request(cfg, [], "/policy").cpu_threads == 2
    unset = FlywheelConfig()
    assert (unset.engine.cpu_threads, unset.bootstrap.cpu_threads) == (None, None)
