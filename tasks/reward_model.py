"""Scalar reward model: a sequence-classification head on a tiny Llama, learnt from the
flywheel's own curated samples (accepted = 1, rejected = 0), so a cheap learned score can stand
in for the generative judge.

It owns collecting the labelled rows from the generation folders, the training loop, scoring,
and the worker entry (`python -m tasks.reward_model`): training and scoring run in their own
process like every other model, each from its request (`tasks.requests.RewardModelRequest`,
`RewardModelScoreRequest`). Departures from the textbook RLHF reward model: labels are
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
from tasks.requests import RewardModelRequest, RewardModelScoreRequest, from_json, to_json
from tasks.subproc import run_worker, worker_main

RM = "rm"  # the reward name of the scalar reward model (`curation.reward_model` names its folder)
SCORE_BATCH = 128  # pairs per forward pass when scoring
REQUESTS = {cls.op: cls for cls in (RewardModelRequest, RewardModelScoreRequest)}


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


def train_rm(request: RewardModelRequest) -> dict:
    """Train the scalar head (and the tiny body under it) with BCE; save a HF checkpoint."""
    import torch
    import torch.nn.functional as F
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from tasks.bootstrap import _lr_at, build_tokenizer
    from tasks.progress import loss_bar

    r = request
    rows = store.read_parquet(Path(r.train_file))
    if not rows or len({row["label"] for row in rows}) < 2:
        raise ValueError(f"{r.train_file}: the reward model needs both accepted and rejected rows")
    started = time.time()
    torch.manual_seed(r.seed)
    rng = random.Random(r.seed)
    tokenizer = build_tokenizer()
    model = LlamaForSequenceClassification(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=r.hidden_size,
            intermediate_size=r.intermediate_size,
            num_hidden_layers=r.num_layers,
            num_attention_heads=r.num_heads,
            num_key_value_heads=r.num_heads,
            max_position_embeddings=r.max_len,
            num_labels=1,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )
    optim = torch.optim.AdamW(model.parameters(), lr=r.learning_rate, weight_decay=0.01)
    # Balanced batches: the flywheel's pools are mostly rejects early on.
    by_label = {k: [row for row in rows if row["label"] == k] for k in (0, 1)}
    losses: list[float] = []
    model.train()
    with loss_bar("reward model", r.progress) as bar:
        task = bar.add_task("train", total=r.steps, loss="-")
        for step in range(r.steps):
            batch = [rng.choice(by_label[i % 2]) for i in range(r.batch_size)]
            ids, mask = _encode(
                tokenizer,
                [row["prompt"] for row in batch],
                [row["completion"] for row in batch],
                r.max_len,
            )
            labels = torch.tensor([float(row["label"]) for row in batch])
            for g in optim.param_groups:
                g["lr"] = _lr_at(step, r.steps, r.learning_rate)
            logits = model(input_ids=ids, attention_mask=mask).logits.squeeze(-1)
            loss = F.binary_cross_entropy_with_logits(logits, labels)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            losses.append(loss.item())
            bar.update(task, advance=1, loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
    model.eval()
    Path(r.out_dir).mkdir(parents=True, exist_ok=True)
    model.save_pretrained(r.out_dir)
    tokenizer.save_pretrained(r.out_dir)
    window = max(1, min(20, len(losses) // 10))
    return {
        "rows": len(rows),
        "first_loss": sum(losses[:window]) / window,
        "final_loss": sum(losses[-window:]) / window,
        "seconds": time.time() - started,
    }


def score(request: RewardModelScoreRequest) -> list[float]:
    """P(accept) of each (prompt, completion)."""
    import torch
    from transformers import AutoTokenizer, LlamaForSequenceClassification

    r, size = request, request.batch_size
    tokenizer = AutoTokenizer.from_pretrained(r.model_dir)
    model = LlamaForSequenceClassification.from_pretrained(r.model_dir).eval()
    max_len = model.config.max_position_embeddings
    out: list[float] = []
    with torch.inference_mode():
        for i in range(0, len(r.prompts), size):
            ids, mask = _encode(
                tokenizer, r.prompts[i : i + size], r.completions[i : i + size], max_len
            )
            out += torch.sigmoid(model(input_ids=ids, attention_mask=mask).logits[:, 0]).tolist()
    return out


def main(request: dict) -> dict:
    """Worker entry: the request of `op` (`train` or `score`) rebuilt from the other keys."""
    data = dict(request)
    op = data.pop("op", None)
    if op not in REQUESTS:
        raise ValueError(f"unknown reward-model op {op!r}; known: {sorted(REQUESTS)}")
    typed = from_json(REQUESTS[op], data)
    if isinstance(typed, RewardModelRequest):
        return train_rm(typed)
    return {"scores": score(typed)}


def _in_worker(request: RewardModelRequest | RewardModelScoreRequest) -> dict:
    return run_worker("tasks.reward_model", {"op": request.op, **to_json(request)})


def train_in_subprocess(request: RewardModelRequest) -> dict:
    """Train in a worker process (memory returned, crashes contained); its figures."""
    return _in_worker(request)


def rm_scores(model_dir: str, prompts: list[str], completions: list[str]) -> list[float]:
    """Score in a worker process (memory returned, crashes contained)."""
    request = RewardModelScoreRequest(model_dir, prompts, completions, SCORE_BATCH)
    return _in_worker(request)["scores"]


if __name__ == "__main__":
    worker_main(main)
