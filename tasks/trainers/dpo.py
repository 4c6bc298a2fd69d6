"""Preference optimisation on the generation's own verdicts: TRL's `DPOTrainer` on pairs of an
accepted and a rejected sample of one seed (`tasks.preference`).

This module owns the `dpo` training mode. Departures from TRL's defaults, each deliberate:

- The reference model is the base model, loaded frozen beside the policy (TRL's default when
  no reference is given, made explicit).
- The pairs' prompt is the policy's rendered prompt (`Sample.prompt`). TRL tokenizes it with
  the tokenizer's special tokens; a prompt rendered by a chat template already starts with BOS
  as text, so that text is dropped first: one BOS, as the generator encoded it
  (`tasks.prompts.encode_prompts`). TRL appends eos to both completions.
- `loss_type` and `beta` come from `train.dpo`; `sigmoid_norm` divides each sequence's log
  ratio by its length (SimPO-style length normalisation, still against the reference).
- Guarded, shown, saved and summarised as every recipe here (`tasks.trainers.common`); the
  summary adds the last logged reward margin and accuracy of the chosen over the rejected.
"""

from __future__ import annotations

import time

import datasets
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tasks.requests import DPORequest
from tasks.trainers.common import (
    NonFiniteGuard,
    prepare_process,
    read_training_table,
    run_and_save,
    show_progress,
    supervised_args,
    train_summary,
)

PAIR_COLUMNS = ("prompt", "chosen", "rejected")


def load_preference_pairs(train_file: str, bos: str | None) -> datasets.Dataset:
    """The prompt / chosen / rejected rows of a Parquet file, a leading BOS text dropped from
    each prompt (the tokenizer adds its own)."""
    table = read_training_table(train_file, PAIR_COLUMNS).select(list(PAIR_COLUMNS)).to_pydict()
    if bos:
        table["prompt"] = [p.removeprefix(bos) for p in table["prompt"]]
    return datasets.Dataset.from_dict(table)


def train_dpo(request: DPORequest) -> dict:
    """DPO of `base_model` on `train_file`'s preference pairs; save to `out_dir`; metrics."""
    from trl import DPOConfig, DPOTrainer

    r = request
    start = time.perf_counter()
    prepare_process(r.cpu_threads)
    tokenizer = AutoTokenizer.from_pretrained(r.base_model)
    dataset = load_preference_pairs(r.train_file, tokenizer.bos_token)
    config = DPOConfig(
        output_dir=r.out_dir,
        loss_type=[r.loss_type],
        beta=r.beta,
        **supervised_args(r, len(dataset)),
    )
    model = AutoModelForCausalLM.from_pretrained(r.base_model, dtype=torch.float32)
    reference = AutoModelForCausalLM.from_pretrained(r.base_model, dtype=torch.float32)
    trainer = DPOTrainer(
        model=model,
        ref_model=reference,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[NonFiniteGuard()],
    )
    if r.progress:
        show_progress(trainer, "dpo")
    result = run_and_save(trainer, r)
    logged = [h for h in trainer.state.log_history if "rewards/margins" in h]
    last = logged[-1] if logged else {}
    return {
        **train_summary(trainer, result, start),
        "pairs": len(dataset),
        "dpo.reward_margin": float(last.get("rewards/margins", float("nan"))),
        "dpo.reward_accuracy": float(last.get("rewards/accuracies", float("nan"))),
    }
