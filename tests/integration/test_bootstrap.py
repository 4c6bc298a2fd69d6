"""A tiny bootstrap end to end: trains, saves a loadable checkpoint, and is cached by recipe."""

import json
from dataclasses import replace

import pytest
import torch

from tasks.bootstrap import bootstrap, main
from tasks.config import FlywheelConfig
from tasks.requests import bootstrap_request, to_json
from tasks.store import read_manifest

pytestmark = pytest.mark.slow

TINY = dict(
    hidden_size=64,
    intermediate_size=128,
    num_layers=2,
    num_heads=2,
    max_position=128,
    pretrain_steps=30,
    batch_size=16,
    learning_rate=3e-3,
    max_difficulty=2,
    seed=0,
    exclude={"1+2", "3-4"},
    progress=False,
)


def test_bootstrap_trains_saves_and_caches(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = bootstrap(tmp_path, **TINY)
    man = read_manifest(path, verify=True)
    assert man is not None and man.stage == "bootstrap"
    out = man.outputs
    assert out["final_loss"] < out["first_loss"]
    assert out["parameters"] > 0
    assert out["torch_threads"] >= 1  # on CPU the weights depend on it (tasks.threads)

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert sum(p.numel() for p in model.parameters()) == out["parameters"]
    assert model.config.eos_token_id == tok.eos_token_id
    assert json.loads((path / "generation_config.json").read_text())["eos_token_id"] == (
        tok.eos_token_id
    )
    ids = tok("Q: 3+5\n", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        gen = model.generate(ids, max_new_tokens=8, do_sample=False)
    assert gen.shape[1] > ids.shape[1]

    # Same recipe: the cached folder, untouched. Another recipe: another folder.
    assert bootstrap(tmp_path, **TINY) == path
    assert read_manifest(path).created == man.created
    other = bootstrap(tmp_path, **{**TINY, "pretrain_steps": 2})
    assert other != path and read_manifest(other) is not None
    smoothed = bootstrap(tmp_path, **{**TINY, "pretrain_steps": 2, "label_smoothing": 0.1})
    assert smoothed not in (path, other)


def test_worker_entry_returns_path(tmp_path):
    """The stage's request (`bootstrap_request`) at this tiny size, through the worker entry."""
    built = bootstrap_request(FlywheelConfig(runs_dir=tmp_path), sorted(TINY["exclude"]))
    shape = {k: v for k, v in TINY.items() if k != "exclude"}
    request = to_json(replace(built, **shape))
    first = main(request)
    assert read_manifest(first["path"]) is not None
    assert main(request) == first
    assert first["path"].startswith(str(tmp_path / "models"))
    with pytest.raises(ValueError, match=r"BootstrapRequest: unknown fields \['hidden_sise'\]"):
        main({**request, "hidden_sise": 64})
