"""Scalar reward model: a sequence-classification head on a tiny Llama, learnt from the
flywheel's own curated samples (accepted = 1, rejected = 0), so a cheap learned score can stand
in for the generative judge.

It owns collecting the labelled rows from the generation folders, the training loop, scoring,
and the worker entry (`python -m tasks.reward_model`): training and scoring run in their own
process like every other model. Departures from the textbook RLHF reward model: labels are
pointwise verdicts of the rules (and judge), not human preference pairs, so the loss is binary
cross-entropy on one logit instead of the Bradley-Terry pair loss; infra_error samples carry no
label and are left out. The model is made from scratch with the bootstrap's tokenizer and
Llama family (`tasks.bootstrap.new_llama`'s shape), like the embedded policy and judge.

Curation uses it as the `rm` reward (`curation.rewards: [..., rm]` with `curation.reward_model`
naming the folder): the curate stage scores the whole pool in one worker run and passes the
scores in. GRPO does not: its worker loads no second model, so the config refuses `rm` there.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from tasks import store
from tasks.records import stable_hash
from tasks.subproc import run_worker, worker_main

RM = "rm"  # the reward name of the scalar reward model (`curation.reward_model` names its folder)


def collect(flywheel_dir: Path) -> list[dict]:
    """(prompt, completion, label, sample_id) of every accepted or rejected sample so far."""
    rows = []
    for gdir in sorted(Path(flywheel_dir).glob("gen-0*")):
        verdicts = gdir / "curate" / "verdicts.parquet"
        if store.read_manifest(gdir / "curate") is None or not verdicts.is_file():
            continue
        samples = {r["id"]: r for r in store.read_parquet(gdir / "generate" / "samples.parquet")}
        for v in store.read_parquet(verdicts):
            if v["outcome"] in ("accept", "reject"):
                s = samples[v["sample_id"]]
                rows.append(
                    {
                        "sample_id": v["sample_id"],
                        "prompt": s["prompt"],
                        "completion": s["completion"],
                        "label": int(v["outcome"] == "accept"),
                    }
                )
    return rows


def split(rows: list[dict], holdout: float) -> tuple[list[dict], list[dict]]:
    """Deterministic train / held-out split by the hash of each sample's text."""
    held = [
        r
        for r in rows
        if int(stable_hash(r["prompt"], r["completion"]), 16) % 1000 < holdout * 1000
    ]
    held_ids = {id(r) for r in held}
    return [r for r in rows if id(r) not in held_ids], held


def _encode(tokenizer, prompts: list[str], completions: list[str], max_len: int):
    import torch

    rows = [
        tokenizer(p + c)["input_ids"][-max_len:] for p, c in zip(prompts, completions, strict=True)
    ]
    width = max(len(r) for r in rows)
    # Left padding: the classification head reads the last non-pad token, which then sits
    # at the end of every row.
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r)
        mask[i, width - len(r) :] = 1
    return ids, mask


def train_rm(
    train_file: str,
    out_dir: str,
    *,
    hidden_size: int = 128,
    intermediate_size: int = 256,
    num_layers: int = 2,
    num_heads: int = 2,
    max_len: int = 256,
    steps: int = 300,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Train the scalar head (and the tiny body under it) with BCE; save a HF checkpoint."""
    import torch
    import torch.nn.functional as F
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from tasks.bootstrap import _lr_at, build_tokenizer
    from tasks.progress import loss_bar

    rows = store.read_parquet(Path(train_file))
    if not rows or len({r["label"] for r in rows}) < 2:
        raise ValueError(f"{train_file}: the reward model needs both accepted and rejected rows")
    started = time.time()
    torch.manual_seed(seed)
    rng = random.Random(seed)
    tokenizer = build_tokenizer()
    model = LlamaForSequenceClassification(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=hidden_size,
            intermediate_size=intermediate_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            num_key_value_heads=num_heads,
            max_position_embeddings=max_len,
            num_labels=1,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )
    optim = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.01)
    # Balanced batches: the flywheel's pools are mostly rejects early on.
    by_label = {k: [r for r in rows if r["label"] == k] for k in (0, 1)}
    losses: list[float] = []
    model.train()
    with loss_bar("reward model", progress) as bar:
        task = bar.add_task("train", total=steps, loss="-")
        for step in range(steps):
            batch = [rng.choice(by_label[i % 2]) for i in range(batch_size)]
            ids, mask = _encode(
                tokenizer, [r["prompt"] for r in batch], [r["completion"] for r in batch], max_len
            )
            labels = torch.tensor([float(r["label"]) for r in batch])
            for g in optim.param_groups:
                g["lr"] = _lr_at(step, steps, learning_rate)
            logits = model(input_ids=ids, attention_mask=mask).logits.squeeze(-1)
            loss = F.binary_cross_entropy_with_logits(logits, labels)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            losses.append(loss.item())
            bar.update(task, advance=1, loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
    model.eval()
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    window = max(1, min(20, len(losses) // 10))
    return {
        "rows": len(rows),
        "first_loss": sum(losses[:window]) / window,
        "final_loss": sum(losses[-window:]) / window,
        "seconds": time.time() - started,
    }


def score(model_dir: str, prompts: list[str], completions: list[str], batch_size: int = 128):
    """P(accept) of each (prompt, completion)."""
    import torch
    from transformers import AutoTokenizer, LlamaForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = LlamaForSequenceClassification.from_pretrained(model_dir).eval()
    max_len = model.config.max_position_embeddings
    out: list[float] = []
    with torch.inference_mode():
        for i in range(0, len(prompts), batch_size):
            ids, mask = _encode(
                tokenizer, prompts[i : i + batch_size], completions[i : i + batch_size], max_len
            )
            out += torch.sigmoid(model(input_ids=ids, attention_mask=mask).logits[:, 0]).tolist()
    return out


def main(request: dict) -> dict:
    """Worker entry: `{"op": "train", ...train_rm args}` or `{"op": "score", model_dir,
    prompts, completions}`."""
    req = dict(request)
    op = req.pop("op")
    if op == "train":
        return train_rm(**req)
    if op == "score":
        return {"scores": score(**req)}
    raise ValueError(f"unknown reward-model op {op!r}")


def rm_scores(model_dir: str, prompts: list[str], completions: list[str]) -> list[float]:
    """Score in a worker process (memory returned, crashes contained)."""
    req = {"op": "score", "model_dir": model_dir, "prompts": prompts, "completions": completions}
    return run_worker("tasks.reward_model", req)["scores"]


if __name__ == "__main__":
    worker_main(main)
