"""GRPO on a generation's seeds: TRL's `GRPOTrainer` with rewards from `tasks.rewards.REWARDS`.

This module owns the GRPO recipe: what it trains on (the seeds' questions and gold answers, not
accepted samples: the policy samples its own groups online), which rewards score them (by name,
with weights), how the run is guarded (the SFT recipe's `NonFiniteGuard`) and what it reports.
Departures from TRL's defaults, each deliberate:

- Every R1-relevant knob is set explicitly from the config: KL `beta` (TRL's default is 0, R1
  used 0.001), clip range `epsilon`, `loss_type`, group size, completion length.
- Groups with no signal (every sample scored the same, so every advantage is 0) are dropped
  before the update, as DAPO's dynamic sampling does: their rows stay in the batch (the batch
  must still split evenly into micro-batches) but leave the loss mask, so they add neither a KL
  term nor tokens to the loss normaliser. The share dropped is logged (`frac_reward_zero_std`).
- Plain-text prompts are tokenized by `tasks.generate.encode_prompts`, the function the
  generation stage uses, so the policy sees the same tokens online as offline (one BOS, also
  after a chat template). Prompts are rendered by `tasks.generate.render_prompts`.
- Generation is TRL's own (transformers `generate`); vLLM colocation is a GPU-only option.
- Metrics go back to the caller, which writes them into the train stage's manifest; per-step
  reward history is kept so a run's trend can be plotted.
"""

from __future__ import annotations

import math
import time
from typing import Any

import datasets
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback
from trl import GRPOConfig, GRPOTrainer

from tasks.generate import encode_prompts, render_prompts
from tasks.rewards import bound_reward
from tasks.trainers.sft import (
    NonFiniteGuard,
    NonFiniteLoss,
    RichProgress,
    loss_history,
    read_training_table,
    run_and_save,
    shared_args,
    train_summary,
)

COLUMNS = ("question", "answer")
# Settings that some rewards take from the config (`bound_reward` passes each only to its own).
REWARD_SETTINGS = {"length": ("length_limit", "length_buffer"), "repetition": ("ngram",)}


class SignalOnlyGRPOTrainer(GRPOTrainer):
    """`GRPOTrainer` that drops zero-signal groups and tokenizes prompts like the generator."""

    def __init__(self, *args: Any, drop_zero_signal: bool, max_length: int, **kwargs: Any):
        self.drop_zero_signal = drop_zero_signal
        self.max_length = max_length
        super().__init__(*args, **kwargs)

    def _tokenize_prompts(self, prompts: list):
        if isinstance(prompts[0], str):
            return encode_prompts(self.processing_class, prompts, self.max_length), None, {}
        return super()._tokenize_prompts(prompts)

    def _generate_and_score_completions(self, inputs):
        try:
            out = super()._generate_and_score_completions(inputs)
        except RuntimeError as e:
            # Diverged weights fail in sampling ("probability tensor contains inf/nan") before
            # any loss is logged: report them as the divergence they are.
            bad = [n for n, p in self.model.named_parameters() if not torch.isfinite(p).all()]
            if bad:
                raise NonFiniteLoss(
                    f"non-finite weights ({bad[0]}, {len(bad)} tensors) at step "
                    f"{self.state.global_step}/{self.state.max_steps}; training stopped and no "
                    "model was saved (lower the learning rate or check the base model's weights)"
                ) from e
            raise
        if not self.drop_zero_signal or not self.model.training:
            return out
        # Advantages are (r - group mean) / (group std + eps): a group whose rewards are all equal
        # has all advantages 0 (up to rounding), whatever the scaling. A group with signal has at
        # least one sample away from the mean.
        adv = out["advantages"]
        g = self.num_generations
        silent = (adv.view(-1, g).abs() < 1e-6).all(dim=1).repeat_interleave(g)
        keep = (~silent).to(out["completion_mask"].dtype).unsqueeze(1)
        out["completion_mask"] = out["completion_mask"] * keep
        mask = out["completion_mask"]
        if "tool_mask" in out:
            mask = mask * out["tool_mask"]
        out["num_items_in_batch"] = self.accelerator.gather(mask.sum()).sum()
        self._metrics["train"]["groups_dropped"].append(silent.float().mean().item())
        return out


def load_prompts(
    train_file: str, tokenizer: Any, prompt_template: str, chat_template: bool, system: str | None
) -> datasets.Dataset:
    """The seeds file as TRL's prompt dataset: `prompt` rendered, the other columns for rewards."""
    rows = read_training_table(train_file, COLUMNS).to_pydict()
    rows["prompt"] = render_prompts(
        tokenizer, rows["question"], prompt_template, chat_template, system
    )
    return datasets.Dataset.from_dict(rows)


def _mean(trainer: GRPOTrainer, key: str) -> float:
    values = [v for _, v in loss_history(trainer, key) if math.isfinite(v)]
    return sum(values) / len(values) if values else float("nan")


def train_grpo(
    base_model: str,
    train_file: str,
    out_dir: str,
    *,
    rewards: dict[str, float],
    learning_rate: float,
    epochs: float,
    max_steps: int | None,
    prompts_per_step: int,
    grad_accum: int,
    num_generations: int,
    max_completion_length: int,
    temperature: float,
    epsilon: float,
    beta: float,
    loss_type: str,
    num_iterations: int,
    scale_rewards: str,
    drop_zero_signal: bool,
    warmup_ratio: float,
    scheduler: str,
    max_length: int,
    bf16: bool,
    seed: int,
    length_buffer: int = 32,
    ngram: int = 3,
    prompt_template: str = "Q: {question}\n",
    chat_template: bool = False,
    system_prompt: str | None = None,
    gradient_checkpointing: bool = False,
    cpu_threads: int | None = None,
    progress: bool = True,
    logging_steps: int = 1,
) -> dict:
    """GRPO from `base_model` on the seeds in `train_file`; save to `out_dir`; return metrics.

    `train_file` is a Parquet file with `question` and `answer` (gold, may be null) and any
    other columns the rewards read (`domain`). `rewards` maps reward names to weights. Raises
    `NonFiniteLoss` (nothing saved) when the loss or gradient norm diverges.
    """
    start = time.perf_counter()
    if cpu_threads is not None:
        torch.set_num_threads(cpu_threads)  # see train_sft: 1 thread is faster on a shared CPU
    if not rewards:
        raise ValueError("train.grpo.rewards: at least one reward is needed")
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    dataset = load_prompts(train_file, tokenizer, prompt_template, chat_template, system_prompt)
    settings = {
        "length_limit": max_completion_length,
        "length_buffer": length_buffer,
        "ngram": ngram,
    }
    funcs = [
        bound_reward(name, **{k: settings[k] for k in REWARD_SETTINGS.get(name, ())})
        for name in rewards
    ]
    if scheduler == "constant" and warmup_ratio > 0:
        scheduler = "constant_with_warmup"
    config = GRPOConfig(
        output_dir=out_dir,
        learning_rate=learning_rate,
        num_train_epochs=epochs,
        max_steps=max_steps if max_steps is not None else -1,
        per_device_train_batch_size=prompts_per_step * num_generations,
        gradient_accumulation_steps=grad_accum,
        num_generations=num_generations,
        max_completion_length=max_completion_length,
        temperature=temperature,
        top_p=1.0,
        top_k=0,
        epsilon=epsilon,
        beta=beta,
        loss_type=loss_type,
        num_iterations=num_iterations,
        scale_rewards=scale_rewards,
        reward_weights=list(rewards.values()),
        warmup_steps=warmup_ratio,
        lr_scheduler_type=scheduler,
        bf16=bf16,
        log_completions=False,
        **shared_args(seed, gradient_checkpointing, logging_steps),
    )
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
    trainer = SignalOnlyGRPOTrainer(
        model=model,
        reward_funcs=funcs,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[NonFiniteGuard()],
        drop_zero_signal=drop_zero_signal,
        max_length=max_length,
    )
    if progress:
        trainer.remove_callback(PrinterCallback)
        trainer.add_callback(RichProgress("grpo"))
    result = run_and_save(trainer, out_dir)
    reward_history = loss_history(trainer, "reward")
    return {
        **train_summary(trainer, result, start),
        "samples": len(dataset),
        "reward_history": reward_history,
        "grpo.reward_first": reward_history[0][1] if reward_history else float("nan"),
        "grpo.reward_last": reward_history[-1][1] if reward_history else float("nan"),
        "grpo.reward_mean": _mean(trainer, "reward"),
        "grpo.reward_std": _mean(trainer, "reward_std"),
        "grpo.zero_signal_share": _mean(trainer, "frac_reward_zero_std"),
        "grpo.groups_dropped": _mean(trainer, "groups_dropped"),
        "grpo.completion_length": _mean(trainer, "completions/mean_length"),
        "grpo.truncated_ratio": _mean(trainer, "completions/clipped_ratio"),
        "grpo.clip_ratio": _mean(trainer, "clip_ratio/region_mean"),
        "grpo.kl": _mean(trainer, "kl"),
        **{f"grpo.reward.{name}": _mean(trainer, f"rewards/{name}/mean") for name in rewards},
    }
