"""SFT throughput: packed sequences (V3 sample masking) against padded batches, real tokens/s.

Both runs go through the real trainer (`tasks.trainers.sft.build_trainer`, TRL's `SFTTrainer`)
with the train stage's request (`tasks.requests.sft_request`), in a fresh worker process each,
on the same untrained model of the demo's shape, the same accepted-like set (arith reference
solutions of levels 1-5, so lengths vary 2-3 fold), the same fixed number of optimizer steps and
about the same real tokens per step. Padded: one sample per row, `batch_size` rows per step,
each batch padded to its longest sample. Packed: TRL's best-fit-decreasing packing fills rows of
up to `max_length` tokens with whole samples and the padding-free collator concatenates a step's
rows into one sequence, so no pad token is computed; its rows per step are sized
(`packed_rows`) to carry what a padded step carries.

Why not the same rows per step: the padding-free collator flattens the whole step into one
sequence, and on CPU (sdpa, no varlen kernel) transformers turns the position-id resets into a
dense block-diagonal mask over it, so attention cost grows with the square of the step's
tokens. 32 packed rows (~6k tokens in one sequence) measured ~0.2x the padded rate. Even at a
padded step's token budget (~1.7k tokens in one sequence) the dense mask's attention outweighs
the ~30% padding it saves on this small-width model: packing pays where a varlen kernel (flash
attention on GPU) skips the masked blocks instead of computing them.

Throughput counts real tokens only: a padded batch's attention-mask ones, a packed batch's
every token. The first step is a warm-up and is not timed (nor are its tokens counted).

    python -m bench.bench_packing --steps 24
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import random
import tempfile
import time
from pathlib import Path

from tasks.config import FlywheelConfig, ModelConfig, TrainConfig

LEVELS = (1, 2, 3, 4, 5)


def training_pairs(count: int, seed: int = 0, levels: tuple[int, ...] = LEVELS) -> list[dict]:
    """`count` prompt/completion rows like an accepted set: arith reference solutions, the
    levels drawn in turn so short and long samples mix."""
    from tasks.domains import DOMAINS

    dom, rng = DOMAINS["arith"], random.Random(seed)
    template = ModelConfig().prompt_template
    rows = []
    for i in range(count):
        q = dom.generate(rng, levels[i % len(levels)])
        rows.append(
            {"prompt": template.format(question=q.question), "completion": dom.solution(q.question)}
        )
    return rows


def real_tokens(batch: dict) -> int:
    """Non-pad tokens of one collated batch: its attention mask's ones, or (padding-free, no
    mask) every token."""
    mask = batch.get("attention_mask")
    return int(mask.sum()) if mask is not None else math.prod(batch["input_ids"].shape)


def packed_rows(padded_step_tokens: float, max_length: int) -> int:
    """Packed rows per step that hold about a padded step's real tokens (at least one row)."""
    if max_length <= 0:
        raise ValueError(f"max_length must be > 0, got {max_length}")
    return max(1, math.ceil(padded_step_tokens / max_length))


def timed_rate(step_ends: list[float], train_start: float, batch_tokens: list[int]) -> dict:
    """Tokens/s over steps 2..N (step 1 is the warm-up). `step_ends[i]` is when step i+1
    ended; `batch_tokens[i]` the real tokens of the batch step i+1 trained on (the loader may
    have collated one batch more than it trained on; that one is ignored)."""
    steps = len(step_ends)
    if steps < 2:
        raise ValueError(f"need at least 2 steps to time past the warm-up, got {steps}")
    if len(batch_tokens) < steps:
        raise ValueError(f"{len(batch_tokens)} collated batches for {steps} steps")
    tokens = sum(batch_tokens[1:steps])
    seconds = step_ends[-1] - step_ends[0]
    return {
        "steps_timed": steps - 1,
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds,
        "warmup_s": step_ends[0] - train_start,
    }


def main(request: dict) -> dict:
    """Worker: build the SFT trainer of `request["sft"]` (an `SFTRequest`, packing on or off),
    train `request["steps"]` steps, time them."""
    from transformers import TrainerCallback

    from tasks.requests import SFTRequest, from_json
    from tasks.trainers.sft import build_trainer, sample_count

    sft = from_json(SFTRequest, request["sft"])
    trainer = build_trainer(sft)
    trainer.args.max_steps = request["steps"]  # a fixed step count, however many rows
    batch_tokens: list[int] = []
    collate = trainer.data_collator

    def counting_collator(examples):
        batch = collate(examples)
        batch_tokens.append(real_tokens(batch))
        return batch

    trainer.data_collator = counting_collator
    step_ends: list[float] = []

    class StepClock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            step_ends.append(time.perf_counter())

    trainer.add_callback(StepClock())
    start = time.perf_counter()
    trainer.train()
    out = timed_rate(step_ends, start, batch_tokens)
    out.update(
        packing=sft.packing,
        samples=sample_count(trainer.train_dataset),
        rows=len(trainer.train_dataset),
        batch_size=sft.batch_size,
        max_length=sft.max_length,
        mean_batch_tokens=sum(batch_tokens[1 : len(step_ends)]) / (len(step_ends) - 1),
    )
    return out


def measure(samples: int = 512, steps: int = 24, model: str | None = None) -> dict:
    """Padded then packed, each in a fresh worker, on one model and one training file."""
    from bench.bench_generate import untrained_default_policy
    from tasks.requests import sft_request, to_json
    from tasks.store import write_parquet
    from tasks.subproc import run_worker

    # A constant rate from the first step, one pass at most (the step count stops it), 1 thread.
    train = TrainConfig(
        batch_size=32,
        max_length=256,
        epochs=1.0,
        grad_accum=1,
        warmup_ratio=0.0,
        scheduler="constant",
        cpu_threads=1,
    )
    with tempfile.TemporaryDirectory(prefix="bench-packing-") as tmp:
        tmp = Path(tmp)
        model_path = model or untrained_default_policy(tmp / "models")
        write_parquet(training_pairs(samples), tmp / "train.parquet")

        def run_one(train: TrainConfig, name: str) -> dict:
            request = sft_request(
                FlywheelConfig(train=train), 0, model_path, tmp / "train.parquet", tmp / name
            )
            sft = to_json(dataclasses.replace(request, progress=False))
            return run_worker("bench.bench_packing", {"sft": sft, "steps": steps})

        padded = run_one(train, "padded")
        rows = packed_rows(padded["mean_batch_tokens"], train.max_length)
        packed = run_one(train.model_copy(update={"batch_size": rows, "packing": True}), "packed")
        runs = {"padded": padded, "packed": packed}
    return {
        "model": model or "untrained default policy (demo shape)",
        "samples": samples,
        "steps": steps,
        "runs": runs,
    }


def ratios(m: dict) -> list:
    """P5: packed ÷ padded SFT real tokens/s."""
    from bench.report import Goal, Ratio, ratio

    pk, pd = m["runs"]["packed"], m["runs"]["padded"]
    return [
        Ratio(
            "P5",
            "packed SFT tokens/s ÷ padded SFT tokens/s",
            ratio(pk["tokens_per_s"], pd["tokens_per_s"]),
            Goal(">=", 1.5),
            detail=f"{pk['tokens_per_s']:,.0f} ÷ {pd['tokens_per_s']:,.0f} real tok/s, "
            f"{m['samples']} arith samples (levels 1-5), {pk['steps_timed']} timed steps each; "
            f"per step {pk['batch_size']} packed rows of <= {pk['max_length']} vs "
            f"{pd['batch_size']} padded rows ({pk['mean_batch_tokens']:,.0f} vs "
            f"{pd['mean_batch_tokens']:,.0f} real tokens), 1 thread; {m['model']}",
        )
    ]


def run(sizes: dict) -> object:
    """`bench.run_all`'s entry: `sizes["packing_steps"]` steps each (default 24)."""
    from bench.report import BenchResult

    m = measure(steps=sizes.get("packing_steps", 24))
    return BenchResult("packing", ratios(m), m)


def cli() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=512)
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--model", help="a local checkpoint (default: untrained, demo shape)")
    args = ap.parse_args()
    for r in ratios(measure(args.samples, args.steps, args.model)):
        print(f"{r.key} {r.name}: {r.value:.2f}{r.unit}  ({r.detail})")


if __name__ == "__main__":
    import sys

    if len(sys.argv) == 3 and sys.argv[1].endswith(".json"):
        from tasks.subproc import worker_main

        worker_main(main)
    else:
        cli()
