"""`train.mode: dpo`: the train stage draws the generation's preference pairs (accepted vs
rejected samples of one seed), its worker runs TRL's `DPOTrainer` from the base model, and the
policy moves: on held-out pairs of questions it never trained on, the chosen completion gains
log-probability over the rejected one relative to the base model."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tasks import store
from tasks.stages.common import read_seeds
from tasks.stages.train import train_stage
from tasks.trainers.common import encode_pairs
from tests.unit.test_export import completions, curated_flywheel

pytestmark = pytest.mark.slow

HELD_OUT = [("3+4", "7"), ("9-2", "7"), ("5+5", "10"), ("8-6", "2"), ("2+9", "11"), ("7-1", "6")]


def held_out_pairs(trained: set[str]) -> list[tuple[str, str, str]]:
    """(prompt, chosen, rejected) of questions outside the training seeds: the right worked
    answer against each of the wrong, untagged and cut-off ones."""
    out = []
    for q, a in HELD_OUT:
        if q in trained:
            continue
        (right, _), _, *wrong = completions(q, a)
        out += [(f"Q: {q}\n", right, bad) for bad, _ in wrong]
    return out


@torch.no_grad()
def margin(model_dir: str, pairs: list[tuple[str, str, str]]) -> float:
    """Mean log p(chosen) - log p(rejected) over the pairs (completion and eos tokens)."""
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()

    def logp(prompt: str, completion: str) -> float:
        [(p, c)] = encode_pairs(tok, [prompt], [completion], 10_000)
        ids = torch.tensor([p + c])
        logits = model(ids).logits[0, :-1].log_softmax(-1)
        picked = logits.gather(1, ids[0, 1:, None])[:, 0]
        return picked[len(p) - 1 :].sum().item()

    return sum(logp(p, c) - logp(p, r) for p, c, r in pairs) / len(pairs)


def test_a_dpo_generation_raises_the_chosen_margin_on_held_out_pairs(tiny_model, tmp_path):
    cfg = curated_flywheel(
        tmp_path,
        seeds=16,
        train={
            "mode": "dpo",
            "epochs": 4,
            "batch_size": 8,
            "warmup_ratio": 0.0,
            "dpo": {"learning_rate": 1e-3, "beta": 0.1, "pairs_per_seed": 3},
        },
    )
    folder = train_stage.fn(cfg, 1, tiny_model)
    out = store.read_manifest(folder, verify=True).outputs
    assert out["mode"] == "dpo" and out["train_rows"] == 3 * 16
    pairs = store.read_parquet(folder / "pairs.parquet")
    assert {p["chosen_reason"] for p in pairs} == {"all_rewards_passed"}
    assert all(p["rejected_reason"] != "all_rewards_passed" for p in pairs)
    assert out["steps"] > 0 and out["dpo.reward_accuracy"] >= 0.5

    trained = {s.question for s in read_seeds(folder.parent / "seeds")}
    held = held_out_pairs(trained)
    assert len(held) >= 9
    before, after = margin(tiny_model, held), margin(str(folder / "model"), held)
    print(f"held-out chosen-rejected log-prob margin: base {before:.1f}, after DPO {after:.1f}")
    assert after > before + 1.0, (before, after)
