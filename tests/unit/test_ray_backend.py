"""The `ray` backend's pure parts: one row per draw with the seed vLLM gives that draw, the
samples gathered back in order with their finish reasons, the processor's arguments, the
config's Ray fields reaching the policy's and the judge's engine, and no Ray on import."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from pydantic import ValidationError

from tasks.backend_ray import gather, processor_args, sample_rows
from tasks.backends import vllm_engine_args
from tasks.config import FlywheelConfig
from tasks.prompts import prompt_seed
from tasks.records import Completion
from tasks.requests import engine_spec, judge_settings, sampling_spec

ROOT = Path(__file__).resolve().parents[2]
CFG = FlywheelConfig(
    engine={"backend": "ray", "replicas": 2, "ray_address": "auto", "ray_batch_size": 16},
    judge={"backend": "ray"},
    sampling={"n": 3, "temperature": 0.7, "max_tokens": 12, "seed": 5},
)
ENGINE, SAMPLING = engine_spec(CFG), sampling_spec(CFG, 2)
PROMPTS = ["Q: 1+2\n", "Q: 3*4\n"]
IDS = [[1, 10, 11], [1, 12, 13, 14]]


def test_each_draw_is_a_row_seeded_as_vllm_seeds_sample_j():
    rows = sample_rows(IDS, PROMPTS, SAMPLING)
    assert [(r["prompt_index"], r["draw"]) for r in rows] == [
        (i, j) for i in (0, 1) for j in (0, 1, 2)
    ]
    for r in rows:
        p = r["sampling_params"]
        base = prompt_seed(SAMPLING.seed, PROMPTS[r["prompt_index"]])
        assert p["seed"] == base + r["draw"] and p["n"] == 1
        assert (p["temperature"], p["top_p"], p["max_tokens"]) == (0.7, 1.0, 12)
        assert r["tokenized_prompt"] == IDS[r["prompt_index"]]


def test_greedy_draws_once_and_copies():
    greedy = replace(SAMPLING, temperature=0.0)
    rows = sample_rows(IDS, PROMPTS, greedy)
    assert [(r["prompt_index"], r["draw"]) for r in rows] == [(0, 0), (1, 0)]
    out = gather(
        [
            {**r, "generated_text": f"t{r['prompt_index']}", "generated_tokens": [5, 2]}
            for r in rows
        ],
        2,
        greedy,
        {2},
    )
    assert out == [[Completion("t0", 2, "stop")] * 3, [Completion("t1", 2, "stop")] * 3]


def _out(i, j, tokens):
    return {"prompt_index": i, "draw": j, "generated_text": f"{i}.{j}", "generated_tokens": tokens}


def test_gather_orders_samples_and_reads_eos_as_stop():
    rows = [_out(i, j, [7, 8, 2] if j == 1 else [7, 8, 9]) for i in (1, 0) for j in (2, 1, 0)]
    out = gather(rows, 2, SAMPLING, {2})
    assert [[c.text for c in s] for s in out] == [["0.0", "0.1", "0.2"], ["1.0", "1.1", "1.2"]]
    assert [c.finish_reason for c in out[0]] == ["length", "stop", "length"]
    assert all(c.num_tokens == 3 for s in out for c in s)  # the EOS counts, as in-process


@pytest.mark.parametrize(
    "rows, error",
    [
        ([_out(0, j, [1]) for j in range(3)], r"returned 3 of 6 samples .*\(1, 0\)"),
        ([_out(i, j, [1]) for i in (0, 1) for j in range(3)] + [_out(1, 2, [1])], "twice"),
    ],
)
def test_gather_refuses_an_incomplete_or_doubled_set(rows, error):
    with pytest.raises(RuntimeError, match=error):
        gather(rows, 2, SAMPLING, {2})


def test_processor_runs_the_in_process_engine_on_fixed_replicas():
    args = processor_args("/m", ENGINE, 7)
    assert args["engine_kwargs"] == vllm_engine_args(ENGINE, 7)  # same engine, same samples
    assert args["engine_kwargs"]["enable_chunked_prefill"] is False
    assert args["concurrency"] == (2, 2) and args["batch_size"] == 16
    assert args["placement_group_config"] == {"bundle_per_worker": {"CPU": 1.0}}
    # CPU replicas are not pinned, each to the same cores (vLLM's default binding on CPU)
    assert args["runtime_env"] == {"env_vars": {"VLLM_CPU_OMP_THREADS_BIND": "nobind"}}
    assert not (args["chat_template_stage"] or args["tokenize_stage"] or args["detokenize_stage"])
    gpu = processor_args("/m", replace(ENGINE, ray_num_gpus=1.0, tensor_parallel_size=2), 7)
    assert gpu["placement_group_config"] == {"bundle_per_worker": {"CPU": 1.0, "GPU": 1.0}}
    assert gpu["engine_kwargs"]["tensor_parallel_size"] == 2
    assert gpu["runtime_env"] is None  # GPU engines keep Ray's and vLLM's own settings


def test_the_config_reaches_the_policy_and_the_judge():
    assert (ENGINE.backend, ENGINE.ray_address, ENGINE.replicas, ENGINE.ray_batch_size) == (
        "ray",
        "auto",
        2,
        16,
    )
    judge = judge_settings(CFG, "/judge", 3).engine
    assert judge.backend == "ray" and judge.max_model_len == CFG.judge.max_model_len
    assert (judge.ray_address, judge.replicas) == ("auto", 2)


@pytest.mark.parametrize(
    "engine, field",
    [
        ({"replicas": 0}, "replicas"),
        ({"tensor_parallel_size": 0}, "tensor_parallel_size"),
        ({"ray_timeout_s": 0}, "ray_timeout_s"),
        ({"ray_address": ""}, "ray_address"),
        ({"backend": "rays"}, "backend"),
    ],
)
def test_bad_ray_settings_name_their_field(engine, field):
    with pytest.raises(ValidationError, match=f"engine.{field}"):
        FlywheelConfig(engine=engine)


@pytest.mark.parametrize(
    "module",
    ["tasks.config", "tasks.requests", "tasks.backends", "tasks.generate", "tasks.judge_run"],
)
def test_importing_the_workers_loads_no_ray(module):
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert [m for m in json.loads(out.stdout) if m == "ray" or m.startswith("ray.")] == []
