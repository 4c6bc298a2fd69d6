"""The real-model presets' training path on CPU, at toy size: a randomly initialised Qwen2-style
chat model (grouped-query attention, a chat template) trained with exactly the requests the
train stage builds from `configs/real_sft_v3.yaml` and `configs/real_grpo.yaml` (bf16 autocast,
gradient checkpointing, packing, cosine floor, chat-template prompts), for a few steps."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest

from tasks.config import load_config
from tasks.domains import DOMAINS
from tasks.requests import grpo_request, sft_request
from tasks.store import write_parquet
from tasks.train import train_in_subprocess

pytestmark = pytest.mark.slow

CONFIGS = Path(__file__).parents[2] / "configs"
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from tasks.bootstrap import build_tokenizer

    out = tmp_path_factory.mktemp("chat-model")
    tok = build_tokenizer()
    tok.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query attention, as the real models have
        max_position_embeddings=512,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    Qwen2ForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def _seeds(n: int) -> list:
    rng = random.Random(0)
    return [DOMAINS["math"].generate(rng, 2) for _ in range(n)]


def test_sft_preset_path(chat_model, tmp_path):
    cfg = load_config(CONFIGS / "real_sft_v3.yaml", **{"model.base": chat_model})
    assert cfg.train.packing and cfg.train.bf16 and cfg.train.gradient_checkpointing
    assert cfg.train.learning_rate == 5e-6 and cfg.train.min_lr_ratio == 0.2
    rows = [
        {
            "prompt": f"user: {s.question}\nassistant: ",
            "completion": DOMAINS["math"].solution(s.question),
        }
        for s in _seeds(24)
    ]
    write_parquet(rows, tmp_path / "train.parquet")
    request = sft_request(cfg, 1, chat_model, tmp_path / "train.parquet", tmp_path / "model")
    assert request.packing and request.min_lr_ratio == 0.2 and request.gradient_checkpointing
    # Toy size, same path.
    request = dataclasses.replace(request, batch_size=2, grad_accum=1, epochs=1.0, cpu_threads=1)
    metrics = train_in_subprocess(request)
    assert metrics["samples"] == 24 and metrics["rows"] < 24  # packed
    assert metrics["steps"] > 0 and (tmp_path / "model" / "model.safetensors").is_file()


def test_grpo_preset_path(chat_model, tmp_path):
    cfg = load_config(CONFIGS / "real_grpo.yaml", **{"model.base": chat_model})
    assert cfg.model.chat_template and cfg.train.grpo.beta == 0.001
    write_parquet(
        [{"question": s.question, "answer": s.answer, "domain": "math"} for s in _seeds(8)],
        tmp_path / "seeds.parquet",
    )
    request = grpo_request(cfg, 1, chat_model, tmp_path / "seeds.parquet", tmp_path / "model")
    assert request.system_prompt and request.chat_template
    request = dataclasses.replace(
        request,
        max_steps=2,
        grad_accum=1,
        max_completion_length=32,
        length_buffer=8,
        cpu_threads=1,
    )
    metrics = train_in_subprocess(request)
    assert metrics["steps"] == 2 and metrics["samples"] == 8
    assert set(metrics) >= {f"grpo.reward.{r}" for r in cfg.train.grpo.rewards}
    assert (tmp_path / "model" / "model.safetensors").is_file()
