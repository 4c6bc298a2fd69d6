"""The generation backends on a real (tiny, random) Llama: HF in-process, vLLM's CPU engine
through the worker process. The model babbles, so these check counts, finish reasons, token
accounting and seeding, not answers."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tasks import generate
from tasks.backends import generate_hf
from tasks.config import FlywheelConfig
from tasks.generate import SAMPLES_SCHEMA, generate_in_subprocess
from tasks.requests import engine_spec, generate_request, sampling_spec, to_json
from tasks.store import write_parquet

pytestmark = pytest.mark.slow

# Four samples of at most 24 tokens, three prompts per HF batch (two batches), 128-token context.
CFG = FlywheelConfig(
    engine={"backend": "hf", "max_model_len": 128, "hf_batch_size": 3},
    sampling={"n": 4, "max_tokens": 24},
)
ENGINE, SAMPLING = engine_spec(CFG), sampling_spec(CFG, 0)
PROMPTS = [f"Q: {a}+{b}=?\n" for a, b in [(1, 2), (13, 4), (7, 7), (2, 0), (5, 11)]]


def check_completions(results, n, max_tokens):
    assert len(results) == len(PROMPTS)
    for samples in results:
        assert len(samples) == n
        for c in samples:
            assert c.finish_reason in {"stop", "length"}
            assert "</s>" not in c.text and "<s>" not in c.text
            if c.finish_reason == "length":
                assert c.num_tokens == max_tokens
            else:  # stopped on EOS, which it counts
                assert 1 <= c.num_tokens <= max_tokens


def test_hf_samples_are_counted_and_reproducible(tiny_model, monkeypatch):
    from transformers import AutoModelForCausalLM

    loads = []
    real = AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(
        AutoModelForCausalLM,
        "from_pretrained",
        lambda *a, **k: loads.append(a) or real(*a, **k),
    )
    timings: dict[str, float] = {}
    first = generate_hf(tiny_model, PROMPTS, ENGINE, SAMPLING, timings=timings)
    assert len(loads) == 1  # one model load for two batches
    assert timings["engine_load_s"] > 0 and timings["generate_s"] > 0
    check_completions(first, SAMPLING.n, SAMPLING.max_tokens)
    reasons = {c.finish_reason for s in first for c in s}
    assert reasons == {"stop", "length"}  # this seed exercises both ways of ending
    assert len({c.text for s in first for c in s}) > len(PROMPTS)  # samples differ

    assert generate_hf(tiny_model, PROMPTS, ENGINE, SAMPLING) == first
    assert generate_hf(tiny_model, PROMPTS, ENGINE, replace(SAMPLING, seed=1)) != first


def test_hf_greedy_copies_one_sample(tiny_model):
    results = generate_hf(tiny_model, PROMPTS, ENGINE, replace(SAMPLING, temperature=0.0))
    check_completions(results, SAMPLING.n, SAMPLING.max_tokens)
    assert all(len(set(samples)) == 1 for samples in results)


def test_hf_respects_max_model_len(tiny_model):
    # Prompts are 9-10 tokens with BOS; 12 leaves 2-3 tokens whatever max_tokens says.
    results = generate_hf(tiny_model, PROMPTS, replace(ENGINE, max_model_len=12), SAMPLING)
    for prompt, samples in zip(PROMPTS, results, strict=True):
        room = 12 - (len(prompt) + 1)
        assert all(c.num_tokens <= room for c in samples)
        assert any(c.finish_reason == "length" and c.num_tokens == room for c in samples)


def test_worker_hf_writes_samples_file(tiny_model, tmp_path):
    questions = tmp_path / "questions.parquet"
    write_parquet([{"seed_id": f"s{i}", "question": f"{i}+1"} for i in range(3)], questions)
    out = tmp_path / "raw.parquet"
    request = to_json(
        replace(generate_request(CFG, tiny_model, SAMPLING, questions, out), progress=False)
    )
    result = generate.main(request)
    table = pq.read_table(out)
    assert table.schema.equals(SAMPLES_SCHEMA)
    rows = table.to_pylist()
    assert result["rows"] == len(rows) == 3 * SAMPLING.n
    assert result["tokens"] == sum(r["num_tokens"] for r in rows)
    assert result["tokens_per_s"] > 0
    assert [(r["seed_id"], r["sample_index"]) for r in rows] == [
        (f"s{i}", k) for i in range(3) for k in range(SAMPLING.n)
    ]
    assert rows[0]["prompt"] == "Q: 0+1\n"

    # A misspelt key fails loudly, before any work, naming where it sits.
    misspelt = {**request, "sampling": {**request["sampling"], "tempreature": 1.0}}
    with pytest.raises(ValueError, match=r"GenerateRequest.sampling: unknown .*'tempreature'"):
        generate.main(misspelt)


def test_vllm_engine_through_worker(tiny_model, tmp_path):
    """One real vLLM CPU engine start (~40 s), in its own process."""
    pytest.importorskip("vllm")
    questions = [f"{a}+{b}" for a, b in [(1, 2), (13, 4), (7, 7), (2, 0), (5, 11), (6, 6)]]
    # The last seed repeats the first question: a prompt's samples depend on (seed, prompt)
    # only, so they must come out identical wherever the prompt sits in the batch.
    seeds = [{"seed_id": f"s{i}", "question": q} for i, q in enumerate(questions)]
    seeds.append({"seed_id": "again", "question": questions[0]})
    qfile, out, log = tmp_path / "q.parquet", tmp_path / "raw.parquet", tmp_path / "gen.log"
    write_parquet(seeds, qfile)
    n = 8
    request = generate_request(
        CFG,
        tiny_model,
        replace(SAMPLING, n=n, max_tokens=32),
        qfile,
        out,
        engine=replace(ENGINE, backend="vllm"),
    )
    result = generate_in_subprocess(replace(request, progress=False), log_path=log)
    table = pq.read_table(out)
    assert table.schema.equals(SAMPLES_SCHEMA)
    rows = table.to_pylist()
    assert result["rows"] == len(rows) == len(seeds) * n
    assert result["tokens"] == sum(r["num_tokens"] for r in rows) > 0
    assert result["tokens_per_s"] > 0 and result["engine_load_s"] > 0
    # One engine load: the checkpoint is read once (vLLM's own INFO lines are not always kept).
    assert Path(log).read_text().count("Loading safetensors checkpoint shards: 100%") == 1

    by_seed: dict[str, list[dict]] = {}
    for r in rows:
        assert r["finish_reason"] in {"stop", "length"}
        assert 1 <= r["num_tokens"] <= 32
        assert r["finish_reason"] == "stop" or r["num_tokens"] == 32
        by_seed.setdefault(r["seed_id"], []).append(r)
    texts = {s: [r["completion"] for r in rs] for s, rs in by_seed.items()}
    assert [r["sample_index"] for r in by_seed["s3"]] == list(range(n))
    assert texts["again"] == texts["s0"]
    assert len(set(texts["s1"])) > 1  # n real samples, not copies
    # Different prompts draw different random numbers. With one seed shared by the batch, this
    # babbling model starts sample k of every prompt with the same characters.
    distinct = [s for s in texts if s != "again"]
    pairs = [(a, b) for i, a in enumerate(distinct) for b in distinct[i + 1 :]]
    same_start = sum(texts[a][k][:3] == texts[b][k][:3] for a, b in pairs for k in range(n))
    assert same_start < len(pairs) * n / 4


def test_vllm_second_pass_reuses_the_engine_and_matches_its_own_run(tiny_model, tmp_path):
    """The eval's greedy pass runs on the engine its k samples loaded: one checkpoint load,
    and the same samples as a worker run of that pass alone (one more engine start)."""
    pytest.importorskip("vllm")
    qfile = tmp_path / "q.parquet"
    write_parquet([{"seed_id": f"s{i}", "question": f"{i}+{i}"} for i in range(6)], qfile)
    vllm = replace(ENGINE, backend="vllm")
    sampled, greedy = replace(SAMPLING, n=3), replace(SAMPLING, n=1, temperature=0.0)
    both, log = tmp_path / "both", tmp_path / "both.log"
    request = generate_request(
        CFG,
        tiny_model,
        sampled,
        qfile,
        both / "k.parquet",
        engine=vllm,
        also=[(greedy, both / "greedy.parquet")],
    )
    result = generate_in_subprocess(replace(request, progress=False), log_path=log)
    assert Path(log).read_text().count("Loading safetensors checkpoint shards: 100%") == 1
    assert [x["rows"] for x in result["also"]] == [6] and result["rows"] == 18

    def alone(sampling, name: str) -> list[dict]:
        out = tmp_path / "alone" / name
        req = generate_request(CFG, tiny_model, sampling, qfile, out, engine=vllm)
        generate_in_subprocess(replace(req, progress=False))
        return pq.read_table(out).to_pylist()

    # The first pass is the ordinary path; the second is what could have changed.
    assert pq.read_table(both / "greedy.parquet").to_pylist() == alone(greedy, "greedy.parquet")
