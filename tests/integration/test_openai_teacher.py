"""A distillation teacher behind a real OpenAI-compatible server: vLLM's API server (the shared
`vllm_server` fixture; the model it serves, the embedded judge, stands in as the teacher).

The generate stage pools the local policy's samples with the served teacher's, each recorded
under the teacher's configured name; the key comes from the variable the entry names and is
never written anywhere; a teacher whose endpoint is down adds no samples (its failed prompts
are counted as errors, not curated as wrong answers) and the stage still completes.
"""

from __future__ import annotations

import random

import pytest

from flows.servers import free_port
from tasks import store
from tasks.config import load_config
from tasks.domains import DOMAINS, make_seeds
from tasks.records import Sample, from_rows, to_rows
from tasks.stages import generate_stage
from tests.integration.conftest import SERVED_NAME
from tests.runs import TINY

pytestmark = pytest.mark.slow

TEACHER, DOWN = "served-teacher", "down-teacher"
KEY = "sk-teacher-not-a-secret"


def test_generate_stage_pools_a_served_teacher(vllm_server, tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("TEACHER_KEY", KEY)
    monkeypatch.setenv("FLYWHEEL_HTTP_RETRIES", "0")
    served = {"backend": "openai", "model": SERVED_NAME}
    cfg = load_config(
        TINY,
        runs_dir=str(tmp_path / "runs"),
        **{
            "sampling.n": 2,
            "distill.teachers": [
                {"name": TEACHER, "base_url": vllm_server, "api_key_env": "TEACHER_KEY", **served},
                {"name": DOWN, "base_url": f"http://127.0.0.1:{free_port()}/v1", **served},
            ],
        },
    )
    seeds = make_seeds(DOMAINS["arith"], 6, 1, random.Random(0), set())
    seeds_folder = tmp_path / "seeds"
    seeds_folder.mkdir()
    store.write_parquet(to_rows(seeds), seeds_folder / "seeds.parquet")

    folder = generate_stage.fn(cfg, 1, tiny_model, seeds_folder)
    out = store.read_manifest(folder, verify=True).outputs
    samples = from_rows(Sample, store.read_parquet(folder / "samples.parquet"))

    assert [(r["model"], r["rows"], r["errors"]) for r in out["sources"]] == [
        (tiny_model, 12, 0),
        (TEACHER, 12, 0),
        (DOWN, 12, 12),  # nothing reached a server: every prompt failed, none is pooled
    ]
    assert len(samples) == out["samples"] == 24
    taught = [s for s in samples if s.model == TEACHER]
    assert len(taught) == 12 and {s.model for s in samples} == {tiny_model, TEACHER}
    # The server's own samples: counted in its tokens, cut at the configured length.
    assert all(s.finish_reason in ("stop", "length") for s in taught)
    assert all(1 <= s.num_tokens <= cfg.sampling.max_tokens for s in taught)
    assert any(s.completion for s in taught)
    # The student trains on its own plain prompt; ids derive from the teacher's name.
    assert {s.prompt for s in taught} == {f"Q: {x.question}\n" for x in seeds}
    assert all(
        s.id == Sample.make_id(1, s.seed_id, s.sample_index, TEACHER, out["params"]) for s in taught
    )
    assert len({s.id for s in samples}) == len(samples)
    for f in (tmp_path / "runs").rglob("*"):
        if f.is_file():
            assert KEY.encode() not in f.read_bytes(), f
