"""GRPO on a generation's seeds: TRL's `GRPOTrainer` with rewards from `tasks.rewards.REWARDS`.

This module owns the GRPO recipe: what it trains on (the seeds' questions and gold answers, not
accepted samples: the policy samples its own groups online), which rewards score them (by name,
with weights), how the run is guarded (`tasks.trainers.common`, as SFT) and what it reports.
Departures from TRL's defaults, each deliberate:

- Every R1-relevant knob is set explicitly from the config: KL `beta` (TRL's default is 0, R1
  used 0.001), clip range `epsilon`, `loss_type`, group size, completion length.
- Groups with no signal (every sample scored the same, so every advantage is 0) leave the update
  for real. Masking their tokens alone is nearly a no-op: their advantage is 0 already, and the
  losses that divide by a row count (`grpo`, `sapo`, `luspo`, `dr_grpo`) would still count them,
  so a step with one silent group in three would be 2/3 of the step on the two live groups.
  Their rows stay in the batch (it must still split evenly into micro-batches) but leave the
  loss mask (no policy or KL term, no tokens in any normaliser) and the loss is rescaled to an
  average over the live rows (`zero_signal_scale`): for every TRL loss type the step equals the
  step on the batch without those groups (`bnpo`, a token mean per micro-batch, becomes the
  mean over the micro-batches that hold live rows). `tests/unit/test_grpo_zero_signal.py`
  compares the gradients. The filter does not refill the batch with new groups (DAPO's dynamic
  sampling does): a step with silent groups learns from fewer groups. Dropped groups and rows
  per step are logged (`zero_signal/groups`, `zero_signal/rows`; `groups_dropped` is the share).
- Plain-text prompts are tokenized by `tasks.prompts.encode_prompts`, the function the
  generation stage uses, so the policy sees the same tokens online as offline (one BOS, also
  after a chat template). Prompts are rendered by `tasks.prompts.render_prompts`.
- Groups are sampled by TRL's transformers `generate` in the trainer (the default, and the only
  choice on CPU), or on GPUs by vLLM (`train.grpo.vllm_mode`: TRL's `use_vllm` with `colocate`,
  an engine in each training process, or `server`, a `trl vllm-serve` on other GPUs).
- Metrics go back to the caller, which writes them into the train stage's manifest; per-step
  reward history is kept so a run's trend can be plotted.
"""

from __future__ import annotations

import math
import time
from typing import Any

import datasets
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import GRPOConfig, GRPOTrainer

from tasks.curate import rule_settings
from tasks.prompts import encode_prompts, render_prompts
from tasks.requests import GRPORequest
from tasks.rewards import Reward, bound_reward
from tasks.trainers.common import (
    NonFiniteGuard,
    NonFiniteLoss,
    loss_history,
    prepare_process,
    read_training_table,
    run_and_save,
    scheduler_type,
    shared_args,
    show_progress,
    train_summary,
)

COLUMNS = ("question", "answer")
LOGGING_STEPS = 1  # every step: the reward history is plotted per step

# How each TRL loss type normalises, which decides how the silent rows' share is taken back out.
# Divided by the rows of a micro-batch (a mean of per-row terms, or rows x max length): silent rows
# still count, so the loss is scaled by all rows / live rows over the generation batch.
ROW_NORMALISED = frozenset({"grpo", "sapo", "luspo", "dr_grpo"})
# Divided by the live tokens of the whole generation batch (`num_items_in_batch`, recounted after
# the silent rows leave the mask): nothing to rescale.
BATCH_TOKEN_NORMALISED = frozenset({"dapo", "cispo", "vespo"})
# A token mean per micro-batch, averaged over the micro-batches: one with no live row adds 0 but
# still counts, so the loss is scaled by all micro-batches / micro-batches with live rows.
MICRO_BATCH_TOKEN_NORMALISED = frozenset({"bnpo"})


def silent_rows(advantages: torch.Tensor, group_size: int) -> torch.Tensor:
    """Rows (bool, one per completion) of groups whose every advantage is 0.

    Advantages are (r - group mean), divided by a std or not: a group whose rewards are all equal
    has all advantages 0 (up to rounding), whatever the scaling; a group with signal has at least
    one sample away from its mean. Rows are grouped consecutively, as TRL samples them.
    """
    silent = (advantages.view(-1, group_size).abs() < 1e-6).all(dim=1)
    return silent.repeat_interleave(group_size)


def zero_signal_scale(loss_type: str, live_rows: torch.Tensor, rows: int) -> float:
    """Factor on TRL's loss, once silent rows have left the mask, that makes it the loss of the
    live rows alone.

    `live_rows` holds the live-row count of every micro-batch of one generation batch (all
    processes), `rows` the rows of one micro-batch. With no live row at all the loss is 0 anyway.
    """
    if loss_type not in ROW_NORMALISED | BATCH_TOKEN_NORMALISED | MICRO_BATCH_TOKEN_NORMALISED:
        raise ValueError(
            f"train.grpo.loss_type={loss_type!r}: no rule for dropping zero-signal groups; "
            "set train.grpo.drop_zero_signal to false or use a known loss type"
        )
    live = int(live_rows.sum())
    if live == 0 or loss_type in BATCH_TOKEN_NORMALISED:
        return 1.0
    if loss_type in ROW_NORMALISED:
        return live_rows.numel() * rows / live
    return live_rows.numel() / int((live_rows > 0).sum())


class SignalOnlyGRPOTrainer(GRPOTrainer):
    """`GRPOTrainer` that drops zero-signal groups and tokenizes prompts like the generator."""

    def __init__(self, *args: Any, drop_zero_signal: bool, max_length: int, **kwargs: Any):
        self.drop_zero_signal = drop_zero_signal
        self.max_length = max_length
        super().__init__(*args, **kwargs)
        if drop_zero_signal:
            zero_signal_scale(self.loss_type, torch.zeros(1), 1)  # refuse an unknown type now

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
        return self._drop_silent_groups(out)

    def _drop_silent_groups(self, out: dict) -> dict:
        """Take the rows of silent groups out of the loss mask and the token count, and mark each
        row live or not (`zero_signal_live`, split into micro-batches with the rows)."""
        # A group may span processes: find silent groups on the gathered batch, keep this slice.
        local = out["advantages"].shape[0]
        silent_all = silent_rows(self.accelerator.gather(out["advantages"]), self.num_generations)
        first = self.accelerator.process_index * local
        silent = silent_all[first : first + local]
        keep = (~silent).to(out["completion_mask"].dtype)
        out["completion_mask"] = out["completion_mask"] * keep.unsqueeze(1)
        mask = out["completion_mask"]
        if "tool_mask" in out:
            mask = mask * out["tool_mask"]
        out["num_items_in_batch"] = self.accelerator.gather(mask.sum()).sum()
        out["zero_signal_live"] = keep
        dropped = int(silent_all.sum())
        metrics = self._metrics["train"]
        metrics["zero_signal/rows"].append(float(dropped))
        metrics["zero_signal/groups"].append(float(dropped // self.num_generations))
        metrics["groups_dropped"].append(dropped / silent_all.numel())
        return out

    def _prepare_inputs(self, generation_batch):
        before = self._buffered_inputs
        inputs = super()._prepare_inputs(generation_batch)
        chunks = self._buffered_inputs
        if chunks is not before and chunks and "zero_signal_live" in chunks[0]:
            # A new generation batch was split into micro-batches: one scale serves them all.
            live = torch.stack([c["zero_signal_live"].sum() for c in chunks])
            live = self.accelerator.gather(live).cpu()
            rows = chunks[0]["zero_signal_live"].numel()
            scale = zero_signal_scale(self.loss_type, live, rows)
            self._metrics["train"]["zero_signal/loss_scale"].append(scale)
            for chunk in chunks:
                chunk["zero_signal_scale"] = torch.tensor(scale, dtype=torch.float64)
        return inputs

    def _compute_loss(self, model, inputs):
        scale = inputs.get("zero_signal_scale")
        if scale is None or scale.item() == 1.0:
            return super()._compute_loss(model, inputs)
        # Every TRL loss is linear in the advantages (a positive factor leaves their signs, hence
        # clipping, masks and gates, unchanged) plus beta x KL: scaling both scales the policy and
        # KL terms and leaves the entropy bonus and router loss as TRL weights them.
        beta = self.beta
        self.beta = beta * scale.item()
        try:
            return super()._compute_loss(
                model, {**inputs, "advantages": inputs["advantages"] * scale.item()}
            )
        finally:
            self.beta = beta


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


def reward_functions(request: GRPORequest) -> list[Reward]:
    """TRL's reward functions for the request's rewards, in its order, each given the settings it
    takes as curation gives them (`tasks.curate.rule_settings`): the `length` reward's limit is
    the completion budget, `repetition` counts `repetition_ngram`-grams."""
    settings = rule_settings(
        request.max_completion_length, request.length_buffer, request.repetition_ngram
    )
    return [bound_reward(name, **settings.get(name, {})) for name in request.rewards]


def train_grpo(request: GRPORequest) -> dict:
    """GRPO from `base_model` on the seeds in `train_file`; save to `out_dir`; return metrics.

    `train_file` is a Parquet file with `question` and `answer` (gold, may be null) and any
    other columns the rewards read (`domain`). `rewards` maps reward names to weights. Raises
    `NonFiniteLoss` (nothing saved) when the loss or gradient norm diverges.
    """
    r = request
    start = time.perf_counter()
    if not r.rewards:
        raise ValueError("train.grpo.rewards: at least one reward is needed")
    if r.vllm_mode is not None and not torch.cuda.is_available():
        raise ValueError(
            f"train.grpo.vllm_mode: {r.vllm_mode!r} samples with vLLM on GPUs, and this machine "
            "has none; leave it unset (null) to sample with the trainer's generate"
        )
    prepare_process(r.cpu_threads)
    tokenizer = AutoTokenizer.from_pretrained(r.base_model)
    dataset = load_prompts(
        r.train_file, tokenizer, r.prompt_template, r.chat_template, r.system_prompt
    )
    config = GRPOConfig(
        output_dir=r.out_dir,
        learning_rate=r.learning_rate,
        num_train_epochs=r.epochs,
        max_steps=r.max_steps if r.max_steps is not None else -1,
        per_device_train_batch_size=r.prompts_per_step * r.num_generations,
        gradient_accumulation_steps=r.grad_accum,
        num_generations=r.num_generations,
        max_completion_length=r.max_completion_length,
        temperature=r.temperature,
        top_p=1.0,
        top_k=0,
        epsilon=r.epsilon,
        beta=r.beta,
        loss_type=r.loss_type,
        num_iterations=r.num_iterations,
        scale_rewards=r.scale_rewards,
        reward_weights=list(r.rewards.values()),
        warmup_steps=r.warmup_ratio,
        lr_scheduler_type=scheduler_type(r.scheduler, r.warmup_ratio),
        bf16=r.bf16,
        log_completions=False,
        use_vllm=r.vllm_mode is not None,
        vllm_mode=r.vllm_mode or "colocate",  # TRL's default; read only with use_vllm
        vllm_server_base_url=r.vllm_server_url,
        vllm_gpu_memory_utilization=r.vllm_gpu_memory_utilization,
        **shared_args(r.seed, r.gradient_checkpointing, LOGGING_STEPS),
    )
    model = AutoModelForCausalLM.from_pretrained(r.base_model, dtype=torch.float32)
    trainer = SignalOnlyGRPOTrainer(
        model=model,
        reward_funcs=reward_functions(r),
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[NonFiniteGuard()],
        drop_zero_signal=r.drop_zero_signal,
        max_length=r.max_length,
    )
    if r.progress:
        show_progress(trainer, "grpo")
    result = run_and_save(trainer, r)
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
        "grpo.groups_dropped_per_step": _mean(trainer, "zero_signal/groups"),
        "grpo.rows_dropped_per_step": _mean(trainer, "zero_signal/rows"),
        "grpo.completion_length": _mean(trainer, "completions/mean_length"),
        "grpo.truncated_ratio": _mean(trainer, "completions/clipped_ratio"),
        "grpo.clip_ratio": _mean(trainer, "clip_ratio/region_mean"),
        "grpo.kl": _mean(trainer, "kl"),
        **{f"grpo.reward.{name}": _mean(trainer, f"rewards/{name}/mean") for name in r.rewards},
    }
