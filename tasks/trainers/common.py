"""What every training recipe shares: how a run is guarded, shown, saved and summarised, how a
training file is read, and how a prompt/completion pair becomes token ids.

- A NaN/Inf loss or gradient norm stops the run (`NonFiniteLoss`) before anything is saved:
  `logging_nan_inf_filter=False`, since the Trainer otherwise hides a non-finite step loss
  behind the mean of earlier ones; and the weights are checked after every optimizer step, so
  a step that is not logged stops the run too (a NaN loss makes NaN gradients and weights).
- Fault points (`tasks.faults`): `train.step` (`nan` makes that step's loss NaN; `sigkill`
  kills the worker mid-run) and `train.save` (between the weights and the rest of the folder).
- One rich progress bar replaces the Trainer's tqdm bar and its printed log dicts.
- Nothing is pickled: no checkpoints, and the Trainer's `training_args.bin` is replaced by JSON.
- Metrics go back to the caller (the orchestrator logs them to MLflow); `report_to="none"`.
- A pair is tokenized as the generator encodes the prompt (`tasks.prompts.encode_prompts`: one
  BOS, also when a chat template writes its own), then the completion verbatim and the
  tokenizer's eos, so the model learns to stop after `</answer>`.
- Under `accelerate launch` every rank runs the recipe: before the first step each checks that
  what accelerate set up is what the request asked for (accelerate silently runs FSDP as DDP on
  a machine without GPUs, and one process where its file says MULTI_CPU), every rank takes part
  in saving (FSDP and ZeRO-3 gather the shards) and rank 0 alone writes the folder. The summary
  says what ran: the world size, accelerate's distributed type, each process's optimizer steps.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import datasets
import pyarrow.parquet as pq
import torch
import transformers
from accelerate.utils import gather_object
from rich.progress import Progress
from transformers import PrinterCallback, TrainerCallback

from tasks.config_training import LAUNCHED, accelerate_type
from tasks.faults import fault
from tasks.progress import loss_bar
from tasks.prompts import encode_prompts
from tasks.threads import set_torch_threads

PAIR_COLUMNS = ("prompt", "completion")


class NonFiniteLoss(RuntimeError):
    """Training produced a NaN/Inf loss or gradient norm; the run was stopped, nothing saved."""


class NonFiniteGuard(TrainerCallback):
    """Raise `NonFiniteLoss` as soon as a logged loss or gradient norm is not finite, or the
    weights are not after an optimizer step (one check, one device sync per step).

    Raising (rather than setting `control.should_training_stop`) makes the Trainer skip the final
    save as well, so a diverged model can never reach the evaluation stage.
    """

    KEYS = ("loss", "grad_norm")

    def __init__(self) -> None:
        self._nan_hook: Any = None

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if fault("train.step") == "nan" and model is not None:
            self._nan_hook = model.get_input_embeddings().register_forward_hook(_nan_loss)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self._nan_hook is not None:
            self._nan_hook.remove()
            self._nan_hook = None
        params = [p.detach() for p in model.parameters()] if model is not None else []
        if params and not bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):
            raise NonFiniteLoss(
                "non-finite loss or gradient (weights not finite after the optimizer step) at "
                f"step {state.global_step}/{state.max_steps}; training stopped and no model was "
                "saved (lower the learning rate or check the base model's weights)"
            )

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


def _nan_loss(module: Any, inputs: Any, output: Any) -> Any:
    """Forward hook (on the input embeddings) of the `nan` fault: the training forward turns NaN
    from its first layer on, so its loss does whichever way a trainer computes it (TRL's fused
    log-probs included); sampling under no_grad is left alone."""
    return output * float("nan") if torch.is_grad_enabled() else output


class RichProgress(TrainerCallback):
    """One rich progress bar (steps, loss, time left) in place of the Trainer's tqdm bar.

    When the output is not a terminal (a worker's piped log), the bar cannot redraw: it prints
    throttled plain lines instead (`tasks.progress`), with the last logged loss, gradient norm
    and learning rate, and the Trainer's closing summary as one line.
    """

    def __init__(self, label: str) -> None:
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
        fields = {"loss": f"{logs['loss']:.4f}"} if "loss" in logs else {}
        fields |= {k: f"{logs[k]:.4g}" for k in ("grad_norm", "learning_rate") if k in logs}
        if fields:
            self.progress.update(self.task, **fields)
        if "train_runtime" in logs and not self.progress.console.is_terminal:
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


def prepare_process(cpu_threads: int | None) -> None:
    """Set up the worker process for training: torch's intra-op threads (`train.cpu_threads`;
    None: the cores free now, `tasks.threads`) and no tqdm bars from datasets or transformers
    (the run shows only its own)."""
    set_torch_threads(cpu_threads, "train.cpu_threads")
    # Process-wide switches: this runs in the training worker.
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


def scheduler_type(scheduler: str, warmup_ratio: float) -> str:
    """The Trainer's scheduler name: the warmup share applies to every shape, and HF's plain
    "constant" would silently ignore it."""
    if scheduler == "constant" and warmup_ratio > 0:
        return "constant_with_warmup"
    return scheduler


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
    table = read_training_table(train_file, PAIR_COLUMNS)
    # In memory (not `from_parquet`): no Arrow cache files are left behind in ~/.cache.
    return datasets.Dataset.from_dict(table.select(list(PAIR_COLUMNS)).to_pydict())


def encode_pairs(
    tokenizer: Any, prompts: list[str], completions: list[str], max_prompt_len: int
) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, completion ids) of each pair: the prompt as every generation backend encodes
    it (an error when it reaches `max_prompt_len` tokens), so training sees the context the
    policy samples from; the completion as plain text, whatever it contains, then eos.

    The completion is appended after the rendered prompt (which ends with the template's
    assistant cue), never rendered as an assistant turn: chat templates such as DeepSeek-R1's
    drop the `<think>` block from assistant turns, and the model would learn answers without
    their reasoning.
    """
    eos = tokenizer.eos_token_id
    out = []
    for prompt, text in zip(
        encode_prompts(tokenizer, prompts, max_prompt_len), completions, strict=True
    ):
        completion = tokenizer(text, add_special_tokens=False)["input_ids"]
        if not completion or completion[-1] != eos:
            completion.append(eos)
        out.append((prompt, completion))
    return out


def logging_steps(rows: int, batch_size: int, grad_accum: int, epochs: float) -> int:
    """About 25 points of loss history on short runs, one every 10 steps on long ones."""
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
        # DDP: every parameter gets a gradient each step; the Trainer's default (True) walks the
        # autograd graph every step looking for ones that do not.
        ddp_find_unused_parameters=False,
    )


def supervised_args(request: Any, rows: int, scheduler: str | None = None) -> dict:
    """The TrainingArguments a `SupervisedRequest` sets alike in every recipe that takes one
    (SFT, GKD, DPO): its optimisation schedule on `rows` training rows, and `shared_args`.
    `scheduler` replaces the request's scheduler name (SFT's cosine with a floor)."""
    r = request
    return dict(
        learning_rate=r.learning_rate,
        num_train_epochs=r.epochs,
        per_device_train_batch_size=r.batch_size,
        gradient_accumulation_steps=r.grad_accum,
        warmup_steps=r.warmup_ratio,  # a float below 1 is a share of the total steps
        lr_scheduler_type=scheduler or scheduler_type(r.scheduler, r.warmup_ratio),
        max_length=r.max_length,
        bf16=r.bf16,
        **shared_args(
            r.seed,
            r.gradient_checkpointing,
            logging_steps(rows, r.batch_size, r.grad_accum, r.epochs),
        ),
    )


def show_progress(trainer: transformers.Trainer, label: str) -> None:
    """With tqdm disabled the Trainer prints each log dict; one rich bar replaces both."""
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(RichProgress(label))


def check_launch(trainer: transformers.Trainer, request: Any) -> None:
    """Under `accelerate launch`: stop before the first step unless accelerate set up what the
    request asked for, `num_processes` processes of the kind its `accelerate_config` names
    (`MULTI_GPU` there is DDP, which accelerate reports as MULTI_GPU on GPUs and MULTI_CPU
    without). A local request is one process by construction."""
    if request.launcher == "local":
        return
    config, wanted = request.accelerate_config, accelerate_type(request.accelerate_config)
    ran, world = trainer.accelerator.distributed_type.value, trainer.accelerator.num_processes
    same = ran == wanted or (wanted == "MULTI_GPU" and ran == "MULTI_CPU")
    if world != request.num_processes or not same:
        raise ValueError(
            f"train.accelerate_config: {config} asks for {wanted} ({LAUNCHED[wanted]}) on "
            f"train.num_processes={request.num_processes}, but accelerate set up {ran} on "
            f"{world} process(es); FSDP and DeepSpeed need GPUs (on CPU use "
            "configs/accelerate/ddp.yaml)"
        )


def run_and_save(trainer: transformers.Trainer, request: Any) -> Any:
    """`trainer.train()` once the launch is checked (`check_launch`), then save the model to
    `request.out_dir` as a Hugging Face folder, nothing pickled.

    A `NonFiniteLoss` raised during training propagates before anything is saved. Every rank
    calls this (saving gathers sharded weights); only the main process writes files.
    """
    check_launch(trainer, request)
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
    trainer.save_model(request.out_dir)
    if trainer.is_world_process_zero():
        fault("train.save")  # a crash here leaves weights without the rest of the folder
        out = Path(request.out_dir)
        (out / "training_args.bin").unlink(missing_ok=True)
        (out / "training_args.json").write_text(trainer.args.to_json_string())
    return result


def loss_history(trainer: transformers.Trainer, key: str = "loss") -> list[list[float]]:
    """[[step, value], ...] of one logged quantity, in step order."""
    return [
        [entry["step"], float(entry[key])]
        for entry in trainer.state.log_history
        if entry.get(key) is not None
    ]


def train_summary(trainer: transformers.Trainer, result: Any, start: float) -> dict:
    """What every training run reports: first/last/mean loss, steps, samples, seconds (the
    worker's and the Trainer's own), the loss history, and what ran: the processes, accelerate's
    distributed type (`NO` for one local process) and each process's optimizer steps and pid
    (gathered from every rank: every rank calls this)."""
    history = loss_history(trainer)
    acc = trainer.accelerator
    ranks = gather_object([(trainer.state.global_step, os.getpid())])
    return {
        "world_size": acc.num_processes,
        "distributed_type": acc.distributed_type.value,
        "steps_per_process": [steps for steps, _ in ranks],
        "process_pids": [pid for _, pid in ranks],
        "train_loss_first": history[0][1] if history else float("nan"),
        "train_loss_last": history[-1][1] if history else float("nan"),
        "train_loss": float(result.training_loss),
        "steps": int(result.global_step),
        "samples": len(trainer.train_dataset),
        "seconds": time.perf_counter() - start,
        "train_seconds": float(result.metrics.get("train_runtime", float("nan"))),
        "loss_history": history,
    }
