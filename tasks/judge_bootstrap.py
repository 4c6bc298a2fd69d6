"""The embedded default judge: a tiny Llama made from scratch to emit the rubric's verdict line.

Same family, tokenizer and loop as the bootstrap policy (`tasks.bootstrap`): a character-level
Llama trained for a few hundred steps on fresh synthetic text and cached by the hash of its
recipe (the rubric's text included, so a new rubric version makes a new judge). Each training
document is one rendered judge prompt, exactly as `tasks.judge.render` builds it at judging
time (per-document random nonce, sanitised and capped candidate), followed by what the judge
should write: notes that copy the candidate's reasoning and answer out, a check word (`same` or
`differ`: does the last step's result match the answer?) and the verdict line the rule verifier
implies (`tasks.judge_data.judge_notes`). The loss covers only what the judge writes, with the
check word and verdict weighted up: the prompt is given, and spending the tiny model's capacity
on predicting rubric text would buy nothing.

Its quality is measured, not assumed: `tests/integration/test_judge_model.py` runs it through
the vLLM CPU engine on held-out questions and reports its agreement with the rules.

Run in its own process: `python -m tasks.judge_bootstrap request.json result.json`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable
from pathlib import Path

import torch

from tasks.bootstrap import (
    DEFAULT_SUITE_SIZE,
    FORMAT_VERSION,
    build_tokenizer,
    new_llama,
    pretrain,
    save_checkpoint,
    worker_args,
)
from tasks.domains import DOMAINS, eval_suite
from tasks.judge import load_rubric, make_nonce, render, verdict_line
from tasks.judge_data import NOTES_VERSION, fresh_candidates, judge_notes
from tasks.records import stable_hash
from tasks.store import read_manifest
from tasks.subproc import worker_main

# Wrong final answers are over-represented in training: when the last step and the answer
# almost always agree, the tiny model learns to copy the answer twice instead of reading the
# last step, and its notes stop telling anything apart (measured).
TRAIN_WEIGHTS = {"wrong_answer": 3.0}
# The decision (check word and verdict line) is a few tokens after notes several times longer;
# weighting it keeps the notes from drowning out the decision they exist for.
VERDICT_WEIGHT = 8.0


def _judge_batch(
    prompts: list[str], targets: list[tuple[str, str]], tokenizer, max_len: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded prompt + notes + decision + eos, from (notes, decision) targets; labels on
    everything after the prompt, weighted 1 on the notes and VERDICT_WEIGHT on the decision."""
    rows, spans = [], []
    for p, (notes, decision) in zip(prompts, targets, strict=True):
        head = tokenizer(p)["input_ids"]  # with BOS
        mid = tokenizer(notes + "\n", add_special_tokens=False)["input_ids"]
        tail = tokenizer(decision, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        row = head + mid + tail
        if len(row) > max_len:
            raise ValueError(
                f"a judge training document is {len(row)} tokens, over "
                f"max_position={max_len}; lower max_candidate_chars or raise max_position"
            )
        rows.append(row)
        spans.append((len(head), len(head) + len(mid)))
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    weights = torch.zeros((len(rows), width))
    for i, (r, (s, v)) in enumerate(zip(rows, spans, strict=True)):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
        labels[i, s : len(r)] = ids[i, s : len(r)]
        weights[i, s:v] = 1.0
        weights[i, v : len(r)] = VERDICT_WEIGHT
    return ids, mask, labels, weights


def judge_dir(out_root: Path, recipe: dict) -> Path:
    return Path(out_root) / f"judge-{stable_hash('judge', FORMAT_VERSION, recipe)}"


def bootstrap_judge(
    out_root: Path,
    *,
    rubric: str = "arith_v1",
    hidden_size: int = 128,
    intermediate_size: int = 256,
    num_layers: int = 2,
    num_heads: int = 2,
    max_position: int = 384,
    steps: int = 1200,
    batch_size: int = 32,
    learning_rate: float = 3e-3,
    max_difficulty: int = 3,
    max_candidate_chars: int = 160,
    seed: int = 0,
    domain: str = "arith",
    exclude: Iterable[str] | None = None,
    progress: bool = True,
) -> Path:
    """Make (or find cached) the tiny judge; return its Hugging Face checkpoint folder.

    `exclude`: questions training must never show (default: the frozen eval suite's), so the
    judge is measured on questions it has not seen.
    """
    rb = load_rubric(rubric)
    dom = DOMAINS[domain]
    if hidden_size % num_heads:
        raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads")
    if exclude is None:
        exclude = {s.question for s in eval_suite(dom, DEFAULT_SUITE_SIZE)}
    excluded = set(exclude)
    recipe = {
        "rubric": rb.name,
        "rubric_version": rb.version,
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size,
        "num_layers": num_layers,
        "num_heads": num_heads,
        "max_position": max_position,
        "steps": steps,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "max_difficulty": max_difficulty,
        "max_candidate_chars": max_candidate_chars,
        "seed": seed,
        "domain": domain,
        "exclude": stable_hash(sorted(excluded)),
        "train_weights": TRAIN_WEIGHTS,
        "verdict_weight": VERDICT_WEIGHT,
        "notes": NOTES_VERSION,
    }
    folder = judge_dir(out_root, recipe)
    if read_manifest(folder) is not None:
        return folder

    started = time.time()
    torch.manual_seed(seed)
    rng = random.Random(f"judge-bootstrap/{seed}")
    tokenizer = build_tokenizer()
    model = new_llama(
        tokenizer, hidden_size, intermediate_size, num_layers, num_heads, max_position
    )
    levels = list(range(1, max_difficulty + 1))

    def next_batch():
        cands = fresh_candidates(rng, batch_size, levels, excluded, domain, TRAIN_WEIGHTS)
        prompts = [
            render(rb, c.question, c.completion, make_nonce(rng), max_candidate_chars)
            for c in cands
        ]
        targets = []
        for c in cands:
            copy, check = judge_notes(c.completion)
            verdict = verdict_line(rb, c.accept)
            targets.append((copy, f"{check}\n{verdict}" if check else verdict))
        return _judge_batch(prompts, targets, tokenizer, max_position)

    losses = pretrain(
        model,
        next_batch,
        steps=steps,
        learning_rate=learning_rate,
        label_smoothing=0.0,
        label="judge pretraining",
        progress=progress,
    )
    save_checkpoint(folder, "judge-bootstrap", model, tokenizer, recipe, losses, started)
    return folder


def main(request: dict) -> dict:
    """Worker entry: `bootstrap_judge(**request)` in its own process."""
    return {"path": str(bootstrap_judge(**worker_args(request)))}


if __name__ == "__main__":
    worker_main(main)
