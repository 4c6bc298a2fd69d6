"""Logit distillation from a teacher that shares the student's tokenizer: TRL's `GKDTrainer`.

This module owns the `gkd` training mode: the student is trained on the curated prompt /
completion pool to match the teacher's full next-token distribution (generalized Jensen-Shannon
divergence, `beta` interpolating forward and reverse KL), and on a share `lmbda` of the batches
on its own samples (drawn at `temperature`) scored by the teacher: on-policy distillation.
Departures from TRL's example setup:

- TRL's GKD collator wants chat `messages`; the flywheel's records are prompt / completion
  strings (the prompt already rendered for the student), so a small collator here tokenizes them
  the way the generation stage does (`tasks.prompts.encode_prompts`: one BOS) and masks the
  prompt out of the loss, with eos appended to every completion as in SFT.
- Teacher and student must share a tokenizer (the same vocabulary, token for token), checked
  before any weights load; TRL only compares vocabulary sizes.
- Guarded and saved exactly as SFT (`NonFiniteGuard`, nothing pickled).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import datasets
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback

from tasks.prompts import encode_prompts
from tasks.trainers.sft import (
    NonFiniteGuard,
    RichProgress,
    _logging_steps,
    load_pairs,
    run_and_save,
    shared_args,
    train_summary,
)


@dataclass
class PromptCompletionCollator:
    """Rows of prompt/completion strings -> GKD's batch: the full sequences right-padded with
    the prompt masked out of `labels`, and the prompts alone left-padded (for sampling)."""

    tokenizer: Any
    max_length: int

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        tok = self.tokenizer
        prompts = encode_prompts(tok, [r["prompt"] for r in rows], self.max_length)
        completions = [
            tok(r["completion"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            for r in rows
        ]
        full = [(p + c)[: self.max_length] for p, c in zip(prompts, completions, strict=True)]
        width, pwidth = max(map(len, full)), max(map(len, prompts))
        pad = tok.pad_token_id
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        pids = torch.full((len(rows), pwidth), pad, dtype=torch.long)
        pmask = torch.zeros((len(rows), pwidth), dtype=torch.long)
        for i, (p, seq) in enumerate(zip(prompts, full, strict=True)):
            ids[i, : len(seq)] = torch.tensor(seq)
            mask[i, : len(seq)] = 1
            labels[i, len(p) : len(seq)] = torch.tensor(seq[len(p) :], dtype=torch.long)
            pids[i, pwidth - len(p) :] = torch.tensor(p)
            pmask[i, pwidth - len(p) :] = 1
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "labels": labels,
            "prompts": pids,
            "prompt_attention_mask": pmask,
        }


def check_shared_tokenizer(student: Any, teacher: Any, teacher_path: str) -> None:
    if student.get_vocab() != teacher.get_vocab():
        raise ValueError(
            f"gkd: the teacher {teacher_path} does not share the student's tokenizer "
            f"({len(teacher)} vs {len(student)} tokens, or different ids); logit distillation "
            "needs one vocabulary. Use the teacher as a generator (distill.teachers) with sft."
        )


def train_gkd(
    base_model: str,
    train_file: str,
    out_dir: str,
    *,
    teacher: str,
    lmbda: float,
    beta: float,
    temperature: float,
    max_new_tokens: int,
    learning_rate: float,
    epochs: float,
    batch_size: int,
    grad_accum: int,
    warmup_ratio: float,
    scheduler: str,
    max_length: int,
    bf16: bool,
    seed: int,
    gradient_checkpointing: bool = False,
    cpu_threads: int | None = None,
    progress: bool = True,
) -> dict:
    """Distil `teacher` into `base_model` on `train_file`'s pairs; save to `out_dir`."""
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    start = time.perf_counter()
    if cpu_threads is not None:
        torch.set_num_threads(cpu_threads)  # see train_sft
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    check_shared_tokenizer(tokenizer, AutoTokenizer.from_pretrained(teacher), teacher)
    dataset = load_pairs(train_file)
    if scheduler == "constant" and warmup_ratio > 0:
        scheduler = "constant_with_warmup"
    config = GKDConfig(
        output_dir=out_dir,
        lmbda=lmbda,
        beta=beta,
        temperature=temperature,
        max_new_tokens=max_new_tokens,
        learning_rate=learning_rate,
        num_train_epochs=epochs,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=grad_accum,
        warmup_steps=warmup_ratio,
        lr_scheduler_type=scheduler,
        max_length=max_length,
        bf16=bf16,
        **shared_args(
            seed,
            gradient_checkpointing,
            _logging_steps(len(dataset), batch_size, grad_accum, epochs),
        ),
    )
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
    teacher_model = AutoModelForCausalLM.from_pretrained(teacher, dtype=torch.float32)
    trainer = GKDTrainer(
        model=model,
        teacher_model=teacher_model,
        args=config,
        data_collator=PromptCompletionCollator(tokenizer, max_length),
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[NonFiniteGuard()],
    )
    if progress:
        trainer.remove_callback(PrinterCallback)
        trainer.add_callback(RichProgress("gkd"))
    result = run_and_save(trainer, out_dir)
    return {**train_summary(trainer, result, start), "samples": len(dataset), "teacher": teacher}
