"""Logit distillation from a teacher that shares the student's tokenizer: TRL's `GKDTrainer`.

This module owns the `gkd` training mode: the student is trained on the curated prompt /
completion pool to match the teacher's full next-token distribution (generalized Jensen-Shannon
divergence, `beta` interpolating forward and reverse KL), and on a share `lmbda` of the batches
on its own samples (drawn at `temperature`) scored by the teacher: on-policy distillation.
Departures from TRL's example setup:

- TRL's GKD collator wants chat `messages`; the flywheel's records are prompt / completion
  strings (the prompt already rendered for the student), so a small collator here tokenizes them
  as SFT does (`tasks.trainers.common.encode_pairs`: the prompt as the generator encodes it, the
  completion then eos), pads them (no packing) and masks the prompt out of the loss.
- Teacher and student must share a tokenizer (the same vocabulary, token for token), checked
  before any weights load; TRL only compares vocabulary sizes.
- Guarded, shown and saved exactly as SFT (`tasks.trainers.common`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tasks.requests import GKDRequest
from tasks.trainers.common import (
    NonFiniteGuard,
    encode_pairs,
    load_pairs,
    prepare_process,
    run_and_save,
    show_progress,
    supervised_args,
    train_summary,
)


@dataclass
class PromptCompletionCollator:
    """Rows of prompt/completion strings -> GKD's batch: the full sequences right-padded with
    the prompt masked out of `labels`, and the prompts alone left-padded (for sampling)."""

    tokenizer: Any
    max_length: int

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        encoded = encode_pairs(
            self.tokenizer,
            [r["prompt"] for r in rows],
            [r["completion"] for r in rows],
            self.max_length,
        )
        prompts = [p for p, _ in encoded]
        full = [(p + c)[: self.max_length] for p, c in encoded]
        width, pwidth = max(map(len, full)), max(map(len, prompts))
        pad = self.tokenizer.pad_token_id
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


def train_gkd(request: GKDRequest) -> dict:
    """Distil `teacher` into `base_model` on `train_file`'s pairs; save to `out_dir`."""
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    r = request
    start = time.perf_counter()
    prepare_process(r.cpu_threads)
    tokenizer = AutoTokenizer.from_pretrained(r.base_model)
    check_shared_tokenizer(tokenizer, AutoTokenizer.from_pretrained(r.teacher), r.teacher)
    dataset = load_pairs(r.train_file)
    config = GKDConfig(
        output_dir=r.out_dir,
        lmbda=r.lmbda,
        beta=r.beta,
        temperature=r.temperature,
        max_new_tokens=r.max_new_tokens,
        **supervised_args(r, len(dataset)),
    )
    model = AutoModelForCausalLM.from_pretrained(r.base_model, dtype=torch.float32)
    teacher_model = AutoModelForCausalLM.from_pretrained(r.teacher, dtype=torch.float32)
    trainer = GKDTrainer(
        model=model,
        teacher_model=teacher_model,
        args=config,
        data_collator=PromptCompletionCollator(tokenizer, r.max_length),
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[NonFiniteGuard()],
    )
    if r.progress:
        show_progress(trainer, "gkd")
    result = run_and_save(trainer, r)
    return {**train_summary(trainer, result, start), "samples": len(dataset), "teacher": r.teacher}
