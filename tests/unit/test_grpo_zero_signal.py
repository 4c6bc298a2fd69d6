"""Zero-signal groups leave the GRPO update for real, for every loss type TRL has.

A group whose completions all scored the same has advantage 0 on every row. Dropping it must
make the step the step on the batch without it: same gradient, not just a zeroed advantage. The
check runs TRL's own loss (a real trainer, synthetic groups, no sampling) once through the
trainer's drop path and once with the silent group cut out of the batch, and compares gradients.
The per-token log-probabilities come from a float64 toy policy (one logit per token id and per
position): the model's own float32 LM head, with group-centred advantages whose terms largely
cancel, would leave rounding gaps of ~1e-3 between two batchings of the same rows.
"""

from __future__ import annotations

import re

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from trl import GRPOConfig, GRPOTrainer
from trl.trainer.utils import split_tensor_dict

from tasks.trainers.grpo import (
    BATCH_TOKEN_NORMALISED,
    MICRO_BATCH_TOKEN_NORMALISED,
    ROW_NORMALISED,
    SignalOnlyGRPOTrainer,
    silent_rows,
    zero_signal_scale,
)
from tests.conftest import build_tiny_tokenizer

KNOWN = ROW_NORMALISED | BATCH_TOKEN_NORMALISED | MICRO_BATCH_TOKEN_NORMALISED
GROUP = 2  # completions per prompt
PROMPT, COMPLETION = 5, 8
F64 = torch.float64  # widths of the synthetic prompt and completion tensors


def trl_loss_types() -> set[str]:
    """The loss types the installed TRL lists in `GRPOConfig.loss_type`'s help."""
    help_text = GRPOConfig.__dataclass_fields__["loss_type"].metadata["help"]
    supported = re.search(r"Supported values are (.*?)\.", help_text)
    assert supported, help_text
    return set(re.findall(r"'(\w+)'", supported.group(1)))


def test_every_trl_loss_type_has_a_rule():
    types = trl_loss_types()
    assert {"grpo", "bnpo", "dr_grpo", "dapo"} <= types
    assert types == KNOWN, "a TRL loss type without a zero-signal rule (or a stale rule)"
    with pytest.raises(ValueError, match="train.grpo.loss_type='ppo'"):
        zero_signal_scale("ppo", torch.tensor([2, 2]), 2)


@pytest.mark.parametrize(
    ("advantages", "expected"),
    [
        ([1.0, -1.0, 0.0, 0.0, 0.5, -0.5], [0, 0, 1, 1, 0, 0]),
        ([0.0, 0.0, 0.0, 0.0], [1, 1, 1, 1]),
        ([1e-9, -1e-9, 0.0, 3e-3], [1, 1, 0, 0]),  # rounding noise is silence; 3e-3 is signal
    ],
)
def test_silent_rows(advantages, expected):
    rows = silent_rows(torch.tensor(advantages), GROUP)
    assert rows.tolist() == [bool(x) for x in expected]


@pytest.mark.parametrize(
    ("loss_type", "live", "rows", "expected"),
    [
        ("grpo", [2, 2, 0], 2, 6 / 4),  # mean over 4 live rows, not 6
        ("dr_grpo", [1, 2], 2, 4 / 3),
        ("dapo", [1, 2], 2, 1.0),  # the token count is recounted instead
        ("bnpo", [2, 0, 1, 0], 2, 2.0),  # average over the 2 micro-batches with live rows
        ("bnpo", [2, 2], 2, 1.0),
        ("grpo", [0, 0], 2, 1.0),  # nothing live: the loss is 0 whatever the scale
    ],
)
def test_zero_signal_scale(loss_type, live, rows, expected):
    assert zero_signal_scale(loss_type, torch.tensor(live), rows) == pytest.approx(expected)


def make_trainer(loss_type: str, grad_accum: int, tmp_path) -> SignalOnlyGRPOTrainer:
    """A real trainer on a tiny random Llama; its sampling is never used."""
    import datasets

    tok = build_tiny_tokenizer()
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=64,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=0,
        )
    )
    model.save_pretrained(tmp_path / "policy")  # TRL loads the KL reference from the path
    config = GRPOConfig(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=8 // grad_accum,
        gradient_accumulation_steps=grad_accum,
        num_generations=GROUP,
        max_completion_length=COMPLETION,
        beta=0.05,  # the KL term must leave with the silent rows as well
        loss_type=loss_type,
        importance_sampling_level="sequence" if loss_type == "luspo" else "token",
        use_cpu=True,
        report_to="none",
    )
    trainer = SignalOnlyGRPOTrainer(
        model=str(tmp_path / "policy"),
        reward_funcs=[lambda completions, **_: [0.0] * len(completions)],
        args=config,
        train_dataset=datasets.Dataset.from_dict({"prompt": ["Q: 1\n"] * 8}),
        processing_class=tok,
        drop_zero_signal=True,
        max_length=64,
    )
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = grad_accum
    trainer._get_per_token_logps_and_entropies = ToyPolicy()
    return trainer


def generation_batch() -> dict[str, torch.Tensor]:
    """4 groups of 2 completions of different lengths; group 2 (rows 2-3) is silent."""
    g = torch.Generator().manual_seed(1)
    rows = 8
    prompt_mask = torch.ones(rows, PROMPT, dtype=torch.long)
    prompt_mask[::2, :2] = 0  # left padding
    lengths = torch.tensor([8, 3, 6, 5, 2, 7, 4, 8])
    completion_mask = (torch.arange(COMPLETION) < lengths[:, None]).long()
    mask_f = completion_mask.float()
    return {
        "prompt_ids": torch.randint(4, 40, (rows, PROMPT), generator=g) * prompt_mask,
        "prompt_mask": prompt_mask,
        "completion_ids": torch.randint(4, 40, (rows, COMPLETION), generator=g) * completion_mask,
        "completion_mask": completion_mask,
        "advantages": torch.tensor([1.2, -1.2, 0.0, 0.0, 0.7, -0.7, -0.4, 0.4], dtype=F64),
        "ref_per_token_logps": -3 - torch.rand(rows, COMPLETION, generator=g, dtype=F64),
        "num_items_in_batch": mask_f.sum(),
    }


LIVE = [0, 1, 4, 5, 6, 7]  # the rows outside the silent group


class ToyPolicy:
    """Per-token log-probabilities from two float64 parameter vectors (token id, position), in
    place of the trainer's forward pass; exact enough to compare gradients to 1e-10."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(2)
        self.token = torch.randn(64, generator=g, dtype=F64).requires_grad_()
        self.position = torch.randn(COMPLETION, generator=g, dtype=F64).requires_grad_()

    def __call__(self, model, input_ids, attention_mask, logits_to_keep, **_):
        ids = input_ids[:, -logits_to_keep:]
        logps = -torch.nn.functional.softplus(self.token[ids] + self.position[:logits_to_keep])
        return logps, torch.zeros_like(logps, dtype=torch.float32), None

    def gradient(self) -> torch.Tensor:
        grad = torch.cat([self.token.grad, self.position.grad])
        self.token.grad = self.position.grad = None
        return grad


def gradient(trainer: GRPOTrainer, chunks: list[dict], loss=GRPOTrainer._compute_loss):
    """The accumulated gradient of one optimizer step over `chunks` (micro-batches)."""
    for chunk in chunks:
        loss(trainer, trainer.model, chunk).backward()
    return trainer._get_per_token_logps_and_entropies.gradient()


def dropped_chunks(trainer: SignalOnlyGRPOTrainer, batch: dict, monkeypatch) -> list[dict]:
    """The micro-batches the trainer itself makes of `batch`, through its drop path."""
    monkeypatch.setattr(GRPOTrainer, "_generate_and_score_completions", lambda self, _: batch)
    trainer._step, trainer._buffered_inputs = 0, None
    trainer._prepare_inputs([{"prompt": "Q: 1\n"}] * 8)
    return trainer._buffered_inputs


def without_silent_group(batch: dict, grad_accum: int) -> list[dict]:
    """The same batch with the silent group cut out, split as TRL would split it."""
    live = {k: v[LIVE] if v.ndim else v for k, v in batch.items()}
    live["num_items_in_batch"] = live["completion_mask"].sum().float()
    return split_tensor_dict(live, grad_accum)


def relative_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("grad_accum", [1, 2])
@pytest.mark.parametrize("loss_type", sorted(trl_loss_types()))
def test_dropping_a_silent_group_equals_training_without_it(
    loss_type, grad_accum, tmp_path, monkeypatch
):
    if loss_type == "bnpo" and grad_accum > 1:
        pytest.skip("bnpo's token mean is per micro-batch: it depends on how rows are split")
    trainer = make_trainer(loss_type, grad_accum, tmp_path)
    torch.manual_seed(0)  # the trainer shuffles rows before splitting them
    chunks = dropped_chunks(trainer, generation_batch(), monkeypatch)
    assert len(chunks) == grad_accum
    reference = gradient(trainer, without_silent_group(generation_batch(), grad_accum))
    dropped = gradient(trainer, chunks, SignalOnlyGRPOTrainer._compute_loss)
    assert reference.norm() > 0
    assert relative_gap(dropped, reference) < 1e-10, loss_type

    # Negative control, the earlier filter: the silent rows leave the mask and the token count,
    # but the loss is not rescaled. Row-normalised losses then give 6/8 of the step.
    masked_only = gradient(trainer, chunks)
    if loss_type in ROW_NORMALISED:
        assert relative_gap(masked_only, 0.75 * reference) < 1e-10
        print(f"{loss_type} ga={grad_accum}: masking only gives 0.75 x the step")
    else:
        assert relative_gap(masked_only, reference) < 1e-10


def test_one_silent_group_in_three_was_two_thirds_of_the_step(tmp_path, monkeypatch):
    """The figure the module docstring states, for R1's `grpo` loss."""
    trainer = make_trainer("grpo", 1, tmp_path)
    batch = {k: v[:6] if v.ndim else v for k, v in generation_batch().items()}
    batch["num_items_in_batch"] = batch["completion_mask"].sum().float()
    monkeypatch.setattr(GRPOTrainer, "_generate_and_score_completions", lambda self, _: batch)
    trainer._step, trainer._buffered_inputs = 0, None
    trainer._prepare_inputs([{"prompt": "Q: 1\n"}] * 6)
    (chunk,) = trainer._buffered_inputs
    live = {k: v[[0, 1, 4, 5]] if v.ndim else v for k, v in batch.items()}
    reference = gradient(trainer, [live])
    assert relative_gap(gradient(trainer, [chunk]), 2 / 3 * reference) < 1e-10
    assert (
        relative_gap(gradient(trainer, [chunk], SignalOnlyGRPOTrainer._compute_loss), reference)
        < 1e-10
    )
    metrics = trainer._metrics["train"]
    assert metrics["zero_signal/groups"] == [1.0] and metrics["zero_signal/rows"] == [2.0]
    assert metrics["groups_dropped"] == [pytest.approx(1 / 3)]
    assert metrics["zero_signal/loss_scale"] == [pytest.approx(1.5)]
