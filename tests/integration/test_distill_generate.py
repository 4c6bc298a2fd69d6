"""The generation stage pools a policy's and a teacher's samples under two prompt templates,
with lineage (model and template) on every sample; real tiny models, hf backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks import store
from tasks.config import load_config
from tasks.domains import DOMAINS, make_seeds
from tasks.records import Sample, from_rows, to_rows
from tasks.stages import generate_stage
from tests.conftest import build_tiny_model
from tests.runs import TINY

pytestmark = pytest.mark.slow


def test_generate_pools_policy_and_teacher_samples_per_template(tiny_model, tmp_path):
    import random

    teacher = str(build_tiny_model(tmp_path / "teacher", seed=1))
    cfg = load_config(
        TINY,
        runs_dir=str(tmp_path),
        **{
            "sampling.n": 2,
            "distill.teachers": [teacher],
            "distill.templates": ["plain", "reflect"],
        },
    )
    seeds = make_seeds(DOMAINS["arith"], 6, 1, random.Random(0), set())
    seeds_folder = tmp_path / "seeds"
    seeds_folder.mkdir()
    store.write_parquet(to_rows(seeds), seeds_folder / "seeds.parquet")

    folder = generate_stage.fn(cfg, 1, tiny_model, seeds_folder)
    out = store.read_manifest(folder, verify=True).outputs
    samples = from_rows(Sample, store.read_parquet(folder / "samples.parquet"))

    sources = {(s.model, s.template) for s in samples}
    assert sources == {(m, t) for m in (tiny_model, teacher) for t in ("plain", "reflect")}
    assert len(samples) == 4 * 6 * 2 == out["samples"] == out["rows"]
    assert len({s.id for s in samples}) == len(samples)
    assert [(r["model"], r["template"], r["rows"]) for r in out["sources"]] == [
        (tiny_model, "plain", 12),
        (tiny_model, "reflect", 12),
        (teacher, "plain", 12),
        (teacher, "reflect", 12),
    ]
    # The student trains on its own plain prompt, whoever answered and however it was asked.
    assert {s.prompt for s in samples} == {f"Q: {x.question}\n" for x in seeds}
    # The policy's plain samples keep the ids a single-source run gives them.
    plain = [s for s in samples if s.model == tiny_model and s.template == "plain"]
    assert all(
        s.id == Sample.make_id(1, s.seed_id, s.sample_index, tiny_model, out["params"])
        for s in plain
    )

    cfg_bad = load_config(TINY, runs_dir=str(tmp_path / "b"), **{"distill.teachers": ["/nope"]})
    with pytest.raises(FileNotFoundError, match=r"distill.teachers\[0\]: /nope"):
        generate_stage.fn(cfg_bad, 1, tiny_model, seeds_folder)
    assert Path(tmp_path / "b").exists() is False or not list(
        Path(tmp_path / "b").rglob("*.parquet")
    )
