"""Packed SFT with sample isolation (V3's sample masking) on the tiny Llama.

The proof: a sample's per-token loss inside a packed row equals its loss computed alone, so no
token attends across a sample boundary and positions restart per sample. The same comparison
without the position resets differs, so the check can fail.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tasks.config import FlywheelConfig
from tasks.domains import arith
from tasks.requests import SFTRequest, sft_request
from tasks.store import write_parquet
from tasks.trainers.sft import build_trainer, train_sft

pytestmark = pytest.mark.slow

TRAIN = dict(
    learning_rate=3e-3,
    epochs=3.0,
    batch_size=2,
    grad_accum=1,
    warmup_ratio=0.1,
    scheduler="cosine",
    max_length=128,
    bf16=False,
    seed=0,
)


def request(model: str, train_file: Path, out_dir: Path, **train) -> SFTRequest:
    """The train stage's SFT request under `train: TRAIN | train` (generation 0)."""
    built = sft_request(FlywheelConfig(train=TRAIN | train), 0, model, train_file, out_dir)
    return dataclasses.replace(built, progress=False)


@pytest.fixture
def pairs(tmp_path: Path) -> Path:
    rng = random.Random(0)
    rows = []
    for _ in range(40):
        question = arith.generate(rng, rng.randint(1, 3)).question
        rows.append({"prompt": f"Q: {question}\n", "completion": arith.solution(question)})
    path = tmp_path / "train.parquet"
    write_parquet(rows, path)
    return path


def token_losses(model, input_ids, labels, **inputs) -> torch.Tensor:
    """Next-token loss at every position (0 where the label is masked), shape (tokens - 1,)."""
    with torch.no_grad():
        logits = model(input_ids=input_ids, **inputs).logits[0, :-1]
    target = labels[0, 1:]
    loss = F.cross_entropy(logits.float(), target.clamp(min=0), reduction="none")
    return loss * (target != -100)


def test_packed_loss_equals_each_samples_loss_alone(tiny_model, pairs, tmp_path):
    trainer = build_trainer(request(tiny_model, pairs, tmp_path / "out", packing=True))
    model = trainer.model.eval()
    rows = [trainer.train_dataset[i] for i in range(2)]
    assert all(len(r["seq_lengths"]) >= 2 for r in rows), "rows must hold several samples"
    batch = trainer.data_collator(rows)  # exactly what the Trainer feeds the model
    assert "attention_mask" not in batch
    labels = batch.pop("labels")
    packed = token_losses(model, labels=labels, **batch)
    ids = batch["input_ids"][0]
    starts = torch.cumsum(torch.tensor([0] + [n for r in rows for n in r["seq_lengths"]]), 0)
    # Completion-only loss survives packing: every sample's prompt is masked, its completion not.
    assert 0 < (labels != -100).sum() < labels.numel()
    assert all((labels[0, a : a + 5] == -100).all() for a in starts[:-1].tolist())
    worst, compared = 0.0, 0
    for a, b in zip(starts[:-1].tolist(), starts[1:].tolist(), strict=True):
        alone = token_losses(model, ids[None, a:b], labels[:, a:b])
        # Position b-1 of the pack predicts the next sample's first token: not a training target.
        inside = packed[a : b - 1]
        assert torch.equal(inside != 0, alone != 0)
        worst = max(worst, (inside - alone).abs().max().item())
        compared += int((alone != 0).sum())
    assert compared == int((labels != -100).sum())  # every trained token was compared
    print(f"packed vs alone: max |diff| {worst:.2e} over {compared} tokens")
    assert worst < 1e-4, worst

    # Without the position resets (one causal sequence), later samples see earlier ones.
    leaky = token_losses(model, batch["input_ids"], labels)
    leak = (leaky - packed).abs().max().item()
    print(f"without position resets: max |diff| {leak:.2e}")
    assert leak > 1e-2


def test_packed_sft_trains_with_cosine_to_a_floor(tiny_model, pairs, tmp_path):
    out = tmp_path / "model"
    metrics = train_sft(
        request(tiny_model, pairs, out, packing=True, min_lr_ratio=0.2, cpu_threads=1)
    )
    assert metrics["samples"] == 40 and metrics["rows"] < 40  # packed
    assert metrics["train_loss_last"] < 0.8 * metrics["train_loss_first"]
    assert (out / "model.safetensors").is_file()
    with pytest.raises(ValueError, match="min_lr_ratio needs the cosine"):
        build_trainer(
            request(tiny_model, pairs, tmp_path / "x", scheduler="linear", min_lr_ratio=0.2)
        )
