"""Supervised fine-tuning on curated samples: TRL's `SFTTrainer` on a prompt/completion file.

This module owns the SFT recipe (what is trained on, how) and the folder it writes. Departures
from TRL's defaults, each deliberate:

- Samples are tokenized here (`tasks.trainers.common.encode_pairs`), not by TRL: the prompt
  exactly as the generator encodes it (one BOS, also when a chat template writes its own, where
  TRL's tokenizer call would add a second), then the completion verbatim and the tokenizer's eos.
- The loss is on completion tokens (and eos) only (`completion_only_loss=True`).
- Gradient checkpointing only when the config asks (TRL turns it on by default): sequences are
  short and models small, so recomputation would only cost time.
- Packing (`packing=True`) is V3's sample masking: TRL's best-fit-decreasing packing puts
  several samples in one row of up to `max_length` tokens, and its padding-free collator gives
  each sample position ids that restart at 0 and no attention mask. From those resets
  transformers builds a block-diagonal causal mask (sdpa/eager, CPU included) or varlen
  boundaries (flash attention), so no token attends across a sample boundary; the loss stays on
  completion tokens. `tests/integration/test_packing.py` checks that a sample's per-token loss
  is the same packed and alone. Off by default: on tiny CPU models the mask costs more than the
  padding it saves.
- Guarded, shown, saved and summarised as every recipe here (`tasks.trainers.common`): a
  non-finite loss stops the run before anything is saved, nothing is pickled, metrics go back to
  the caller.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import datasets
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

from tasks.requests import SFTRequest
from tasks.trainers.common import (
    NonFiniteGuard,
    encode_pairs,
    load_pairs,
    prepare_process,
    run_and_save,
    scheduler_type,
    show_progress,
    supervised_args,
    train_summary,
)


def sft_dataset(tokenizer: Any, pairs: datasets.Dataset) -> datasets.Dataset:
    """Prompt/completion rows as SFT's token ids: `input_ids` (prompt, completion, eos) and
    `completion_mask` (1 on the completion and eos, the tokens trained on)."""
    # No length bound here: TRL truncates to `max_length` and drops rows left without a target.
    encoded = encode_pairs(tokenizer, pairs["prompt"], pairs["completion"], sys.maxsize)
    return datasets.Dataset.from_dict(
        {
            "input_ids": [p + c for p, c in encoded],
            "completion_mask": [[0] * len(p) + [1] * len(c) for p, c in encoded],
        }
    )


def build_trainer(request: SFTRequest) -> SFTTrainer:
    """The configured `SFTTrainer` (dataset tokenized, labels masked), ready to `train()`."""
    r = request
    prepare_process(r.cpu_threads)
    dataset = load_pairs(r.train_file)
    scheduler, scheduler_kwargs = scheduler_type(r.scheduler, r.warmup_ratio), {}
    if r.min_lr_ratio is not None:
        if scheduler != "cosine":
            raise ValueError(f"min_lr_ratio needs the cosine scheduler, got {scheduler!r}")
        # V3: cosine down to a floor (5e-6 -> 1e-6), not to zero.
        scheduler, scheduler_kwargs = "cosine_with_min_lr", {"min_lr_rate": r.min_lr_ratio}
    config = SFTConfig(
        output_dir=r.out_dir,
        lr_scheduler_kwargs=scheduler_kwargs,
        packing=r.packing,
        packing_strategy="bfd",  # whole samples only: a sample is never split across rows
        padding_free=r.packing,
        completion_only_loss=True,
        **supervised_args(r, len(dataset), scheduler),
    )
    tokenizer = AutoTokenizer.from_pretrained(r.base_model)
    # fp32 master weights; with bf16=True the Trainer autocasts the forward pass.
    model = AutoModelForCausalLM.from_pretrained(r.base_model, dtype=torch.float32)
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=sft_dataset(tokenizer, dataset),
        processing_class=tokenizer,
        callbacks=[NonFiniteGuard()],
    )
    if r.progress:
        show_progress(trainer, "sft")
    return trainer


def sample_count(dataset: datasets.Dataset) -> int:
    """Samples in a prepared dataset, packed (each row lists its samples' lengths) or not."""
    if "seq_lengths" in dataset.column_names:
        return sum(len(x) for x in dataset["seq_lengths"])
    return len(dataset)


def train_sft(request: SFTRequest) -> dict:
    """Fine-tune `base_model` on `train_file`'s completions; save it to `out_dir`; return metrics.

    `out_dir` receives a Hugging Face folder (safetensors weights, config, generation config,
    tokenizer, `training_args.json`) that `AutoModelForCausalLM` and vLLM load. Raises
    `NonFiniteLoss` (nothing saved) if the loss or gradient norm diverges, `ValueError` for an
    empty or malformed train file.
    """
    start = time.perf_counter()
    trainer = build_trainer(request)
    result = run_and_save(trainer, request)
    return {
        **train_summary(trainer, result, start),
        "samples": sample_count(trainer.train_dataset),
        "rows": len(trainer.train_dataset),  # packed rows when packing
    }
