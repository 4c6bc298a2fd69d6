"""The train stage: the challenger, trained with the generation's recipe."""

from __future__ import annotations

import dataclasses
import random
import shutil
import time
from pathlib import Path

from tasks import store
from tasks.config import FlywheelConfig
from tasks.curate import merge_pool, mix_replay
from tasks.preference import preference_pairs
from tasks.records import Sample, Verdict, from_rows, stable_hash
from tasks.requests import dpo_request, gkd_request, grpo_request, sft_request
from tasks.stages.common import (
    completed,
    heavy_task,
    read_seeds,
)
from tasks.train import train_in_subprocess


@heavy_task(name="train", task_run_name="gen-{generation:04d}/train")
def train_stage(cfg: FlywheelConfig, generation: int, base_model: str) -> Path:
    """Train the challenger with this generation's recipe (`train.mode` or `train.schedule`).

    `sft` trains on accepted samples; `grpo` on the generation's seeds (questions and gold
    answers: the policy samples its own groups); `sft_then_grpo` runs GRPO from the SFT model
    of the same generation, and keeps only the final model; `dpo` on the generation's preference
    pairs (an accepted and a rejected sample of one seed, `tasks.preference`).

    The worker starts as `train.launcher` says (one process, or `accelerate launch` of
    `train.num_processes`); the manifest records the launch asked for and what ran (the
    worker's `world_size`, `distributed_type` and `steps_per_process`).
    """
    folder = store.stage_dir(cfg.flywheel_dir, generation, "train")
    if completed(folder) is not None:
        return folder
    stage = cfg.train.stage(generation)
    log_path = folder.parent / f"{folder.name}.log"
    with store.write_stage(folder, "train") as (tmp, out):
        t0 = time.perf_counter()
        t = cfg.train
        out.update(
            mode=stage.mode,
            label=stage.label,
            launcher=t.launcher,
            num_processes=t.num_processes,
            accelerate_config=str(t.accelerate_config) if t.accelerate_config else None,
        )
        model_in = base_model
        if stage.mode in ("gkd", "dpo"):
            # One request on one table: GKD on the accepted pairs, DPO on preference pairs.
            gkd = stage.mode == "gkd"
            rows = _sft_rows(cfg, generation) if gkd else _dpo_rows(cfg, generation)
            keys = ("prompt", "completion") if gkd else ("chosen_id", "rejected_id")
            table = tmp / ("train.parquet" if gkd else "pairs.parquet")
            store.write_parquet(rows, table)
            build = gkd_request if gkd else dpo_request
            metrics = train_in_subprocess(
                build(cfg, generation, base_model, table, tmp / "model"), log_path
            )
            out.update(
                metrics,
                train_rows=len(rows),
                hash=stable_hash(sorted(tuple(r[k] for k in keys) for r in rows)),
            )
        if stage.mode in ("sft", "sft_then_grpo"):
            rows = _sft_rows(cfg, generation)
            store.write_parquet(rows, tmp / "train.parquet")
            sft_dir = tmp / ("model" if stage.mode == "sft" else "sft-model")
            metrics = train_in_subprocess(
                sft_request(cfg, generation, base_model, tmp / "train.parquet", sft_dir), log_path
            )
            out.update(
                metrics,
                train_rows=len(rows),
                hash=stable_hash(sorted((r["prompt"], r["completion"]) for r in rows)),
            )
            model_in = str(sft_dir)
        if stage.mode in ("grpo", "sft_then_grpo"):
            rows = _grpo_rows(cfg, generation)
            store.write_parquet(rows, tmp / "grpo.parquet")
            metrics = train_in_subprocess(
                grpo_request(cfg, generation, model_in, tmp / "grpo.parquet", tmp / "model"),
                log_path,
            )
            grpo_hash = stable_hash(sorted((r["question"], r["answer"]) for r in rows))
            if stage.mode == "grpo":
                out.update(metrics, train_rows=len(rows), hash=grpo_hash)
            else:  # the SFT half named the training set; GRPO's figures go next to it
                out.update(
                    {k: v for k, v in metrics.items() if k.startswith("grpo.")},
                    grpo_rows=len(rows),
                    grpo_hash=grpo_hash,
                    grpo_steps=metrics["steps"],
                    grpo_steps_per_process=metrics["steps_per_process"],
                    grpo_seconds=metrics["seconds"],
                    reward_history=metrics["reward_history"],
                )
                shutil.rmtree(tmp / "sft-model")  # the GRPO model descends from it
        out["base_model"] = base_model
        out["wall_s"] = time.perf_counter() - t0  # the worker processes, start to exit
    return folder


def _sft_rows(cfg: FlywheelConfig, generation: int) -> list[dict]:
    gens = range(1, generation + 1) if cfg.train.replay else [generation]
    pools = [
        store.read_parquet(store.stage_dir(cfg.flywheel_dir, g, "curate") / "accepted.parquet")
        for g in reversed(gens)
    ]  # newest first: the newest copy of a duplicate wins
    mixed = mix_replay(pools[0], merge_pool(pools[1:]), cfg.train.replay_share, generation)
    rows = [{"prompt": r["prompt"], "completion": r["completion"]} for r in mixed]
    if not rows:
        raise RuntimeError(
            f"gen-{generation:04d}: no accepted samples to train on; the policy solved nothing. "
            "Use easier seeds.levels, raise sampling.n, or check the verifier."
        )
    return rows


def _dpo_rows(cfg: FlywheelConfig, generation: int) -> list[dict]:
    """The generation's preference pairs (`tasks.preference`), drawn with the training seed."""
    gdir = store.gen_dir(cfg.flywheel_dir, generation)
    samples = from_rows(Sample, store.read_parquet(gdir / "generate" / "samples.parquet"))
    verdicts = {
        v["sample_id"]: Verdict(v["outcome"], v["reason"])
        for v in store.read_parquet(gdir / "curate" / "verdicts.parquet")
    }
    pairs = preference_pairs(
        samples, verdicts, cfg.train.dpo.pairs_per_seed, cfg.train.seed + generation
    )
    if not pairs:
        raise RuntimeError(
            f"gen-{generation:04d}: no preference pairs to train on; no seed has both an "
            "accepted and a rejected sample. Raise sampling.n or use train.mode sft."
        )
    return [dataclasses.asdict(p) for p in pairs]


def _grpo_rows(cfg: FlywheelConfig, generation: int) -> list[dict]:
    """The generation's seeds as GRPO prompts: question, gold answer (may be null), domain."""
    seeds = read_seeds(store.stage_dir(cfg.flywheel_dir, generation, "seeds"))
    limit = cfg.train.grpo.max_prompts
    if limit is not None and limit < len(seeds):
        seeds = random.Random(stable_hash("grpo-prompts", cfg.train.seed, generation)).sample(
            seeds, limit
        )
    return [
        {"seed_id": s.id, "question": s.question, "answer": s.answer, "domain": cfg.domain}
        for s in seeds
    ]
