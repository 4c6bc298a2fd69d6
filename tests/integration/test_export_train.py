"""An exported folder is training data as it stands: TRL's `SFTTrainer` takes
`datasets.load_from_disk(OUT)` of the prompt-completion and the messages export, tokenizes the
samples to the ids the flywheel's own SFT recipe trains on, and a few steps change the model."""

from __future__ import annotations

import math

import datasets
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

from tasks.config_export import ExportFormat
from tasks.export import export
from tasks.trainers.common import encode_pairs
from tests.unit.test_export import curated_flywheel, request

pytestmark = pytest.mark.slow

# The flywheel's plain prompt (`Q: {question}\n`) as a chat template over the tiny vocabulary.
PLAIN_AS_CHAT = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}Q: {{ m['content'] }}\n"
    "{% else %}{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
)


def _train(model_path: str, tokenizer, folder, out) -> tuple[SFTTrainer, float]:
    """Two SFT steps on the exported folder; the trainer and how far the weights moved."""
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    before = [p.detach().clone() for p in model.parameters()]
    args = SFTConfig(
        output_dir=str(out),
        max_steps=2,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=datasets.load_from_disk(str(folder)),
        processing_class=tokenizer,
    )
    trainer.train()
    moved = sum(
        (p.detach() - b).abs().sum().item() for p, b in zip(model.parameters(), before, strict=True)
    )
    return trainer, moved


def test_sft_trainer_trains_on_the_exported_folder_as_is(tiny_model, tmp_path):
    datasets.disable_progress_bars()
    cfg = curated_flywheel(tmp_path / "runs")
    export(request(cfg, tmp_path / "pc", ExportFormat.prompt_completion))
    export(request(cfg, tmp_path / "chat", ExportFormat.messages))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.chat_template = PLAIN_AS_CHAT

    rows = datasets.load_from_disk(str(tmp_path / "pc"))
    pairs = encode_pairs(tokenizer, rows["prompt"], rows["completion"], 10_000)
    flywheel_ids = [p + c for p, c in pairs]  # what the train stage's SFT recipe trains on
    for name in ("pc", "chat"):
        trainer, moved = _train(tiny_model, tokenizer, tmp_path / name, tmp_path / f"{name}-out")
        assert trainer.state.global_step == 2
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        assert losses and all(math.isfinite(x) for x in losses)
        assert moved > 0
        assert trainer.train_dataset["input_ids"] == flywheel_ids, name
        if name == "pc":  # the loss on the completion and eos only, as the flywheel's recipe
            (p, c), labels = pairs[0], trainer.train_dataset[0]["labels"]
            assert labels == [-100] * len(p) + c
