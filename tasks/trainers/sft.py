"""Supervised fine-tuning on curated samples: TRL's `SFTTrainer` on a prompt/completion file.

This module owns the SFT recipe (what is trained on, how the run is guarded and shown) and the
folder it writes. Departures from TRL's defaults, each deliberate:

- Samples are tokenized here (`encode_pairs`), not by TRL: the prompt exactly as the generator
  encodes it (`tasks.prompts.encode_prompts`: one BOS, also when a chat template writes its
  own, where TRL's tokenizer call would add a second), then the completion verbatim and the
  tokenizer's eos, so the model learns to stop after `</answer>`. The completion is appended
  after the rendered prompt (which ends with the template's assistant cue), never rendered as
  an assistant turn: chat templates such as DeepSeek-R1's drop the `<think>` block from
  assistant turns, and the model would learn answers without their reasoning.
- The loss is on completion tokens (and eos) only (`completion_only_loss=True`).
- No gradient checkpointing by default (TRL turns it on): sequences are short and models small,
  so recomputation would only cost time.
- Packing (`packing=True`) is V3's sample masking: TRL's best-fit-decreasing packing puts
  several samples in one row of up to `max_length` tokens, and its padding-free collator gives
  each sample position ids that restart at 0 and no attention mask. From those resets
  transformers builds a block-diagonal causal mask (sdpa/eager, CPU included) or varlen
  boundaries (flash attention), so no token attends across a sample boundary; the loss stays on
  completion tokens. `tests/integration/test_packing.py` checks that a sample's per-token loss
  is the same packed and alone. Off by default: on tiny CPU models the mask costs more than the
  padding it saves.
- `logging_nan_inf_filter=False`: the Trainer otherwise hides a NaN/Inf step loss behind the mean
  of earlier ones; here a non-finite loss or gradient norm stops the run (`NonFiniteLoss`) before
  anything is saved.
- Nothing is pickled: no checkpoints, and the Trainer's `training_args.bin` is replaced by JSON.
- Metrics go back to the caller (the orchestrator logs them to MLflow); `report_to="none"`.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

import datasets
import pyarrow.parquet as pq
import torch
import transformers
from rich.progress import Progress
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PrinterCallback,
    TrainerCallback,
)
from trl import SFTConfig, SFTTrainer

from tasks.progress import loss_bar
from tasks.prompts import encode_prompts

COLUMNS = ("prompt", "completion")


class NonFiniteLoss(RuntimeError):
    """Training produced a NaN/Inf loss or gradient norm; the run was stopped, nothing saved."""


class NonFiniteGuard(TrainerCallback):
    """Raise `NonFiniteLoss` as soon as a logged loss or gradient norm is not finite.

    Raising (rather than setting `control.should_training_stop`) makes the Trainer skip the final
    save as well, so a diverged model can never reach the evaluation stage.
    """

    KEYS = ("loss", "grad_norm")

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key in self.KEYS:
            value = (logs or {}).get(key)
            if value is not None and not math.isfinite(float(value)):
                raise NonFiniteLoss(
                    f"non-finite loss or gradient ({key}={value}) at step "
                    f"{state.global_step}/{state.max_steps}; "
                    "training stopped and no model was saved (lower the learning rate or check "
                    "the base model's weights)"
                )


class RichProgress(TrainerCallback):
    """One rich progress bar (steps, loss, time left) in place of the Trainer's tqdm bar.

    When the output is not a terminal (a worker's piped log), the bar cannot redraw, so every
    log event is also printed as one plain line.
    """

    def __init__(self, label: str = "sft") -> None:
        self.label = label
        self.progress: Progress | None = None
        self.task: Any = None

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        self.progress = loss_bar(self.label)
        self.task = self.progress.add_task(self.label, total=state.max_steps, loss="-")
        self.progress.start()

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.progress is None or not logs:
            return
        if "loss" in logs:
            self.progress.update(self.task, loss=f"{logs['loss']:.4f}")
        if not self.progress.console.is_terminal:
            shown = {k: v for k, v in logs.items() if k != "total_flos"}
            line = " ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items()
            )
            self.progress.console.print(
                f"step {state.global_step}/{state.max_steps} {line}", soft_wrap=True
            )

    def on_train_end(self, args, state, control, **kwargs):
        self.close()

    def close(self) -> None:
        """Stop the live display; also called when training raises, so the terminal is restored."""
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def read_training_table(train_file: str | Path, columns: tuple[str, ...]) -> Any:
    """A training Parquet file as an Arrow table, refused (naming the file) when it is missing,
    lacks one of `columns`, or has no rows."""
    path = Path(train_file)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such training file")
    table = pq.read_table(path)
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; has {table.column_names}")
    if table.num_rows == 0:
        raise ValueError(f"{path}: the training file has no rows; nothing to train on")
    return table


def load_pairs(train_file: str | Path) -> datasets.Dataset:
    """The prompt/completion rows of a Parquet file as an in-memory `datasets.Dataset`."""
    table = read_training_table(train_file, COLUMNS)
    # In memory (not `from_parquet`): no Arrow cache files are left behind in ~/.cache.
    return datasets.Dataset.from_dict(table.select(list(COLUMNS)).to_pydict())


def encode_pairs(tokenizer: Any, pairs: datasets.Dataset) -> datasets.Dataset:
    """Prompt/completion rows as SFT's token ids: `input_ids` (prompt, completion, eos) and
    `completion_mask` (1 on the completion and eos, the tokens trained on).

    The prompt is encoded as every generation backend encodes it, so SFT trains on the context
    the policy samples from; the completion follows as plain text, whatever it contains.
    """
    # No length bound here: TRL truncates to `max_length` and drops rows left without a target.
    prompts = encode_prompts(tokenizer, pairs["prompt"], max_model_len=sys.maxsize)
    eos = tokenizer.eos_token_id
    rows: dict[str, list[list[int]]] = {"input_ids": [], "completion_mask": []}
    for prompt, text in zip(prompts, pairs["completion"], strict=True):
        completion = tokenizer(text, add_special_tokens=False)["input_ids"]
        if not completion or completion[-1] != eos:
            completion.append(eos)
        rows["input_ids"].append(prompt + completion)
        rows["completion_mask"].append([0] * len(prompt) + [1] * len(completion))
    return datasets.Dataset.from_dict(rows)


def _logging_steps(rows: int, batch_size: int, grad_accum: int, epochs: float) -> int:
    # About 25 points of loss history on short runs, one every 10 steps on long ones.
    steps = math.ceil(math.ceil(rows / batch_size) / grad_accum * epochs)
    return max(1, min(10, steps // 25))


def shared_args(seed: int, gradient_checkpointing: bool, logging_steps: int) -> dict:
    """TrainingArguments every trainer here sets alike: seeded data order, logs from the first
    step with NaN/Inf left visible (the guard reads them), nothing saved or evaluated mid-run, no
    reporters (MLflow is the orchestrator's), the CPU when there is no CUDA, no tqdm (the rich
    bar replaces it)."""
    return dict(
        seed=seed,
        data_seed=seed,
        gradient_checkpointing=gradient_checkpointing,
        logging_steps=logging_steps,
        logging_first_step=True,
        logging_nan_inf_filter=False,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        disable_tqdm=True,
    )


def build_trainer(
    base_model: str,
    train_file: str,
    out_dir: str,
    *,
    learning_rate: float,
    epochs: float,
    batch_size: int,
    grad_accum: int,
    warmup_ratio: float,
    scheduler: str,
    max_length: int,
    bf16: bool,
    seed: int,
    progress: bool = True,
    gradient_checkpointing: bool = False,
    packing: bool = False,
    min_lr_ratio: float | None = None,
) -> SFTTrainer:
    """The configured `SFTTrainer` (dataset tokenized, labels masked), ready to `train()`."""
    dataset = load_pairs(train_file)
    # TRL's dataset preparation and transformers' load/save show tqdm bars of their own; the
    # run shows only its bar. (Process-wide switches: this runs in the training worker.)
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    # The warmup share applies to every shape; HF's plain "constant" would silently ignore it.
    if scheduler == "constant" and warmup_ratio > 0:
        scheduler = "constant_with_warmup"
    scheduler_kwargs = {}
    if min_lr_ratio is not None:
        if scheduler != "cosine":
            raise ValueError(f"min_lr_ratio needs the cosine scheduler, got {scheduler!r}")
        # V3: cosine down to a floor (5e-6 -> 1e-6), not to zero.
        scheduler, scheduler_kwargs = "cosine_with_min_lr", {"min_lr_rate": min_lr_ratio}
    config = SFTConfig(
        output_dir=out_dir,
        learning_rate=learning_rate,
        num_train_epochs=epochs,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=grad_accum,
        warmup_steps=warmup_ratio,  # a float below 1 is a share of the total steps
        lr_scheduler_type=scheduler,
        lr_scheduler_kwargs=scheduler_kwargs,
        max_length=max_length,
        packing=packing,
        packing_strategy="bfd",  # whole samples only: a sample is never split across rows
        padding_free=packing,
        completion_only_loss=True,
        bf16=bf16,
        **shared_args(
            seed,
            gradient_checkpointing,
            _logging_steps(len(dataset), batch_size, grad_accum, epochs),
        ),
    )
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    # fp32 master weights; with bf16=True the Trainer autocasts the forward pass.
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=encode_pairs(tokenizer, dataset),
        processing_class=tokenizer,
        callbacks=[NonFiniteGuard()],
    )
    if progress:
        # With tqdm disabled the Trainer prints each log dict; the rich bar replaces both.
        trainer.remove_callback(PrinterCallback)
        trainer.add_callback(RichProgress())
    return trainer


def run_and_save(trainer: transformers.Trainer, out_dir: str) -> Any:
    """`trainer.train()`, then save the model as a Hugging Face folder, nothing pickled.

    A `NonFiniteLoss` raised during training propagates before anything is saved.
    """
    try:
        result = trainer.train()
    finally:
        for cb in trainer.callback_handler.callbacks:
            if isinstance(cb, RichProgress):
                cb.close()
    # The Trainer switched the KV cache off in the config for training; the saved model generates.
    trainer.accelerator.unwrap_model(trainer.model).config.use_cache = True
    # `save_model` (not `model.save_pretrained`) so sharded/distributed weights are gathered
    # first; it also pickles the TrainingArguments, which this project replaces with JSON.
    trainer.save_model(out_dir)
    out = Path(out_dir)
    (out / "training_args.bin").unlink(missing_ok=True)
    (out / "training_args.json").write_text(trainer.args.to_json_string())
    return result


def train_summary(trainer: transformers.Trainer, result: Any, start: float) -> dict:
    """What every training run reports: first/last/mean loss, steps, samples, seconds (the
    worker's and the Trainer's own) and the loss history."""
    history = loss_history(trainer)
    return {
        "train_loss_first": history[0][1] if history else float("nan"),
        "train_loss_last": history[-1][1] if history else float("nan"),
        "train_loss": float(result.training_loss),
        "steps": int(result.global_step),
        "samples": len(trainer.train_dataset),
        "seconds": time.perf_counter() - start,
        "train_seconds": float(result.metrics.get("train_runtime", float("nan"))),
        "loss_history": history,
    }


def sample_count(dataset: datasets.Dataset) -> int:
    """Samples in a prepared dataset, packed (each row lists its samples' lengths) or not."""
    if "seq_lengths" in dataset.column_names:
        return sum(len(x) for x in dataset["seq_lengths"])
    return len(dataset)


def loss_history(trainer: transformers.Trainer, key: str = "loss") -> list[list[float]]:
    """[[step, value], ...] of one logged quantity, in step order."""
    return [
        [entry["step"], float(entry[key])]
        for entry in trainer.state.log_history
        if entry.get(key) is not None
    ]


def train_sft(
    base_model: str,
    train_file: str,
    out_dir: str,
    *,
    learning_rate: float,
    epochs: float,
    batch_size: int,
    grad_accum: int,
    warmup_ratio: float,
    scheduler: str,
    max_length: int,
    bf16: bool,
    seed: int,
    progress: bool = True,
    gradient_checkpointing: bool = False,
    cpu_threads: int | None = None,
    packing: bool = False,
    min_lr_ratio: float | None = None,
) -> dict:
    """Fine-tune `base_model` on `train_file`'s completions; save it to `out_dir`; return metrics.

    `out_dir` receives a Hugging Face folder (safetensors weights, config, generation config,
    tokenizer, `training_args.json`) that `AutoModelForCausalLM` and vLLM load. Raises
    `NonFiniteLoss` (nothing saved) if the loss or gradient norm diverges, `ValueError` for an
    empty or malformed train file. `cpu_threads` sets torch's intra-op threads for this process
    (None: torch's default, one per core).
    """
    start = time.perf_counter()
    if cpu_threads is not None:
        # Small matmuls gain little from a second thread, and OpenMP threads spin-wait when a core
        # is busy elsewhere: on a shared 2-core machine 1 thread measured 3-7x faster than 2.
        torch.set_num_threads(cpu_threads)
    trainer = build_trainer(
        base_model,
        train_file,
        out_dir,
        learning_rate=learning_rate,
        epochs=epochs,
        batch_size=batch_size,
        grad_accum=grad_accum,
        warmup_ratio=warmup_ratio,
        scheduler=scheduler,
        max_length=max_length,
        bf16=bf16,
        seed=seed,
        progress=progress,
        gradient_checkpointing=gradient_checkpointing,
        packing=packing,
        min_lr_ratio=min_lr_ratio,
    )
    result = run_and_save(trainer, out_dir)
    return {
        **train_summary(trainer, result, start),
        "samples": sample_count(trainer.train_dataset),
        "rows": len(trainer.train_dataset),  # packed rows when packing
    }
