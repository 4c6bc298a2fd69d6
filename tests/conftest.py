"""Shared fixtures: a tiny random Llama and its character-level tokenizer, made on the spot.

The model is untrained (random weights), so it babbles: tests that need it check plumbing
(shapes, counts, finish reasons, reproducibility), never answer quality. It is small enough to
build in well under a second and shaped so vLLM's CPU attention accepts it (head size 64).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

# Prefect's test harness and ephemeral servers would try to send telemetry (no network here).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def build_tiny_tokenizer() -> Any:
    """The project's own character-level tokenizer (the bootstrap's): `<s>` first, tags kept."""
    from tasks.bootstrap import build_tokenizer

    return build_tokenizer()


def build_tiny_model(out_dir: Path, seed: int = 0) -> Path:
    """Save the tiny tokenizer and a random 2-layer Llama into `out_dir`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    ft = build_tiny_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(ft),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    ft.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Path of a freshly built tiny random Llama checkpoint (model + tokenizer)."""
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-model")))


@pytest.fixture(scope="session")
def tiny_tokenizer() -> Any:
    """The tiny model's tokenizer, without building the model."""
    return build_tiny_tokenizer()
