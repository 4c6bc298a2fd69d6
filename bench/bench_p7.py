"""P7: does the flywheel pay for itself? The flywheel beside what a user would run instead, from
one base model, at equal training compute and equal sampling budget, on one frozen suite.

The arms, each in its own flywheel folder under one runs folder (the suite and the base model
are made once; every stage resumes from its manifest, so a rerun redoes nothing):

1. `flywheel`: `generations` generations, gate and seed evolution on, as `flywheel run` runs them.
2. `rft`: one-shot rejection-sampling fine-tuning. The base samples once as many completions as
   all flywheel generations together (fresh generator seeds at generation 1's level mix), the
   same verifiers curate them, and SFT trains once from the base for as many training tokens as
   the flywheel's training runs together.
3. `grpo`: GRPO only, from the base, on the seeds of `rft` (the same generator draw), for at most
   the sampling budget in completions and at most the flywheel's training tokens.
4. `reference`: SFT of the base on the domain's reference solutions of fresh seeds, as many rows
   as `rft` trained on, for the flywheel's training tokens: distillation from a perfect teacher,
   the upper bound the flywheel is not meant to reach.

Training compute is training tokens seen (`Compute`): prompt + completion tokens of every row
trained on, times the epochs (GRPO: of every completion its steps sampled). It is matched in
tokens, not rows, because the arms' rows differ in length and count. The sampling budget is
completions sampled (generation, the seeds stage's own problems, GRPO's groups). Each arm
reports pass@1 with its 95 % interval, greedy pass@1, pass@k, mean length, and its gain over
the base with a 95 % paired-bootstrap interval; P7 is flywheel gain ÷ rft gain.

Each arm but the flywheel is also put through the flywheel's gate against the base (`gate`: would
its model be promoted?), and P7 is given again with one-shot RFT held to that bar: a flywheel
generation that lowers greedy pass@1 beyond noise is kept out, and so would RFT's model be.

Beside the arms: DPO (`train.mode: dpo`) on the flywheel's generation-1 data against that
generation's SFT challenger (same data, same epochs); per flywheel generation, whether sampled
pass@1 rose without greedy pass@1 falling beyond noise (the gate's greedy rule,
`tasks.gate.greedy_check`); and levers (`--lever`): the flywheel arm again with the overrides
of `LEVERS`, each against the same `rft` arm.

Fresh items (`--fresh N`, default 256; 0: off): the suite is fixed, so the base, every arm's
final model and every lever's final champion are also scored, by the same eval stage, on N items
drawn from the domain's generator at levels 2-3 (`--fresh-levels`) with a seed no stage uses,
none of them in the suite or any seed or training set of any arm or lever
(`bench.fresh_items`). They are frozen once under `<workdir>/fresh/` like the suite, one eval
per model beside them; each arm and lever gets a `fresh` block beside its suite figures.

    python -m bench.bench_p7                                  # configs/bench.yaml, a temp folder
    python -m bench.bench_p7 --config configs/tiny.yaml       # a plumbing check
    python -m bench.bench_p7 --workdir runs/p7 --save          # kept: a rerun resumes
    python -m bench.bench_p7 --workdir runs/p7 --no-arms --lever low_lr    # beside it
    python -m bench.bench_p7 --workdir runs/p7 --extras reference          # finished arms only
    python -m bench.bench_p7 --workdir runs/p7 --fresh 512 --fresh-levels 2,3,4
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import math
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.bench_flywheel import DEFAULT_CONFIG, isolate_services, stage_outputs
from bench.fresh_items import (
    DEFAULT_LEVELS,
    FRESH_SEED,
    draw_fresh,
    fresh_name,
    level_quotas,
    questions_from_prompts,
)

ARMS = ("flywheel", "rft", "grpo", "reference")
EXTRAS = ("reference", "grpo", "dpo")  # what runs after the flywheel and one-shot RFT

# Config overrides of the flywheel arm, one run each (`--lever`); the comment says what each tries.
# Generation 1 at a fifth of the bench's 5e-4, generation 2 at half, then the bench's own rate.
RISING_LR = [
    {"mode": "sft", "learning_rate": 1.0e-4},
    {"mode": "sft", "learning_rate": 2.5e-4},
    {"mode": "sft"},
]

LEVERS: dict[str, dict[str, Any]] = {
    # Harder seeds from generation 1, and a curriculum floor that keeps drawing the hard levels.
    "curriculum": {"seeds.levels": [1, 2, 3], "seeds.curriculum_floor": 0.1},
    # Distinct reasoning paths only: near-duplicates cut harder, every distinct path kept.
    "paths": {"hygiene.near_dup": 0.7, "curation.max_per_seed": 8},
    # SFT, then GRPO from the SFT model on a quarter of the bench's 512 seeds, every generation.
    "sft_then_grpo": {"train.mode": "sft_then_grpo", "train.grpo.max_prompts": 128},
    # Cooler generation: fewer right answers reached through garbled steps (the verifier reads
    # only the final answer), so SFT pulls the greedy policy less off its mode.
    "temperature": {"sampling.temperature": 0.6},
    # A fifth of the learning rate: the policy moves less far from the base's greedy mode.
    "low_lr": {"train.learning_rate": 1.0e-4},
    # STaR rationalization: seeds no sample solved, sampled 4 more times with the answer shown.
    "star": {"sampling.rationalize.n": 4},
    # The loop without seed evolution: every generation samples fresh generator seeds from the
    # champion (iterated on-policy RFT behind the gate), to tell what sampling from a better
    # policy buys apart from what mining the failures costs.
    "on_policy": {"seeds.sources": {"generator": 1.0, "failures": 0.0, "mutations": 0.0}},
    # Seed evolution without the mutations (harder variants of failed seeds): the failures'
    # share stays, the mutations' goes to the generator.
    "no_mutations": {"seeds.sources": {"generator": 0.8, "failures": 0.2, "mutations": 0.0}},
    # A learning rate that rises with the training set: generation 1's few accepted samples at a
    # fifth of the bench's rate, then half, then all of it once the replayed set is as large as
    # one-shot RFT's (at the full rate, generation 1's short run lost greedy accuracy).
    "rising_lr": {"train.schedule": RISING_LR},
    # R1's last SFT stage, every generation: the base retrained on all accepted samples so far
    # (replay), which grow towards one-shot RFT's set, while the champion samples; at the
    # bench's rate, and with the rate rising as the set grows (generation 1's small set trained
    # at the full rate lost greedy accuracy however its schedule was set).
    "from_base": {"train.start_from": "base"},
    "from_base_rising": {
        "train.start_from": "base",
        "train.schedule": RISING_LR,
    },
    # The gate's greedy guard on a frozen suite of the harder levels as well as the main suite,
    # whose many level-1 items hid a greedy loss on levels 2-3 (its pass@1 limit off: greedy
    # alone is the lever).
    "hard_greedy": {
        "eval.extra_suites": {
            "hard": {"levels": [2, 3], "size": 256, "max_drop": 1.0, "greedy": True}
        }
    },
}

N_BOOT = 2000  # bootstrap replicates of every interval here
BOOT_SEED = 0


# -- pure helpers ---------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Compute:
    """What an arm spent: optimizer steps, training tokens seen (prompt + completion of every
    row trained on, times epochs), rows seen (rows times epochs) and completions sampled."""

    steps: int = 0
    tokens: float = 0.0
    rows_seen: float = 0.0
    sampled: int = 0

    def __add__(self, other: Compute) -> Compute:
        return Compute(
            self.steps + other.steps,
            self.tokens + other.tokens,
            self.rows_seen + other.rows_seen,
            self.sampled + other.sampled,
        )


def matched_epochs(target_tokens: float, tokens_per_epoch: int) -> float:
    """Epochs over a training set of `tokens_per_epoch` tokens that see `target_tokens`."""
    if tokens_per_epoch <= 0 or target_tokens <= 0:
        raise ValueError(
            f"cannot match compute: target_tokens ({target_tokens}) and tokens_per_epoch "
            f"({tokens_per_epoch}) must be > 0"
        )
    return target_tokens / tokens_per_epoch


def grpo_steps(budget: int, target_tokens: float, rows_per_step: int, tokens_per_row: float) -> int:
    """GRPO steps that sample at most `budget` completions (`rows_per_step` a step) and train on
    about `target_tokens` at most (`tokens_per_row` each: an estimate before training); >= 1."""
    if rows_per_step <= 0 or tokens_per_row <= 0:
        raise ValueError(
            f"rows_per_step ({rows_per_step}) and tokens_per_row ({tokens_per_row}) must be > 0"
        )
    by_compute = round(target_tokens / (rows_per_step * tokens_per_row))
    return max(1, min(budget // rows_per_step, by_compute))


def item_scores(items: list[dict]) -> dict[str, float]:
    """Per-item pass@1 (correct / n) by item id."""
    return {i["item_id"]: i["correct"] / i["n"] for i in items}


def paired_diffs(before: list[dict], after: list[dict]) -> list[float]:
    """after - before per item, in item-id order; both evals must have scored the same items."""
    a, b = item_scores(before), item_scores(after)
    if a.keys() != b.keys():
        raise ValueError(f"the evaluations scored different items ({len(a.keys() ^ b.keys())})")
    return [b[k] - a[k] for k in sorted(a)]


def mean_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean of `values` with its 95 % bootstrap interval (2.5 and 97.5 % quantiles, seeded)."""
    import numpy as np

    from tasks.gate import paired_bootstrap

    low, high = paired_bootstrap(np.array(values), n_boot=N_BOOT, alpha=0.025, seed=BOOT_SEED)
    return float(np.mean(values)), float(low[0]), float(high[0])


def gain_ratio(gain: float, reference_gain: float) -> float | None:
    """gain ÷ reference_gain; None when the reference did not gain (no meaningful ratio)."""
    return gain / reference_gain if reference_gain > 0 else None


# -- reading runs ---------------------------------------------------------------------------------
def read_items(eval_folder: Path) -> tuple[list[dict], list[dict]]:
    """An eval's per-item results: the k samples' and the greedy pass's ([] without one)."""
    from tasks import store
    from tasks.stages import GREEDY_ITEMS

    greedy = eval_folder / GREEDY_ITEMS
    return (
        store.read_parquet(eval_folder / "items.parquet"),
        store.read_parquet(greedy) if greedy.is_file() else [],
    )


def eval_figures(eval_folder: Path, k: int, base_folder: Path | None) -> dict:
    """One eval's headline figures, pass@1 with its 95 % interval and, against the base's eval,
    the sampled and greedy gains with their 95 % paired intervals."""
    from tasks.gate import GREEDY
    from tasks.plots import pass1_interval

    rep = stage_outputs(eval_folder)["report"]
    items, greedy = read_items(eval_folder)
    p1, half = pass1_interval(items)
    out = {
        "pass@1": rep["pass@1"],
        "pass@1_ci": [max(0.0, p1 - half), min(1.0, p1 + half)],
        "greedy": rep.get(GREEDY),
        "pass@k": rep[f"pass@{k}"],
        "mean_tokens": rep["mean_tokens"],
        "format_rate": rep["format_rate"],
        "levels": {key[12:]: v for key, v in rep.items() if key.startswith("pass@1_level")},
        "eval": str(eval_folder),
    }
    if base_folder is not None:
        base_items, base_greedy = read_items(base_folder)
        gain, low, high = mean_interval(paired_diffs(base_items, items))
        out.update(gain=gain, gain_ci=[low, high])
        if greedy and base_greedy:
            gain, low, high = mean_interval(paired_diffs(base_greedy, greedy))
            out.update(greedy_gain=gain, greedy_gain_ci=[low, high])
    return out


def gate_verdict(cfg, before: Path, after: Path) -> dict:
    """What the flywheel's gate (its test and guards, `tasks.stages.gate.eval_decision`) says of
    the model evaluated in `after` as the challenger of the one evaluated in `before`: an arm
    held to the bar every flywheel generation must pass."""
    from tasks.stages.gate import eval_decision

    d = eval_decision(cfg, before, after)
    return {"promote": d.promote, "rule": d.rule, "reason": d.reason}


class Counter:
    """Token counts of training rows, with the base model's tokenizer, encoded as the trainers
    encode them (`tasks.trainers.common.encode_pairs`: one BOS, the completion, eos)."""

    def __init__(self, model: str, prompt_template: str) -> None:
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.prompt_template = prompt_template

    def pairs(self, prompts: list[str], completions: list[str]) -> int:
        from tasks.trainers.common import encode_pairs

        encoded = encode_pairs(self.tokenizer, prompts, completions, sys.maxsize)
        return sum(len(p) + len(c) for p, c in encoded)

    def sft_file(self, path: Path) -> int:
        from tasks import store

        rows = store.read_parquet(path)
        return self.pairs([r["prompt"] for r in rows], [r["completion"] for r in rows])

    def dpo_file(self, path: Path) -> int:
        from tasks import store

        rows = store.read_parquet(path)
        prompts = [r["prompt"] for r in rows]
        return self.pairs(prompts, [r["chosen"] for r in rows]) + self.pairs(
            prompts, [r["rejected"] for r in rows]
        )

    def question_prompts(self, questions: list[str]) -> float:
        """Mean prompt tokens of `questions` in the policy's prompt template."""
        from tasks.prompts import encode_prompts

        prompts = [self.prompt_template.format(question=q) for q in questions]
        ids = encode_prompts(self.tokenizer, prompts, sys.maxsize)
        return sum(len(x) for x in ids) / max(len(ids), 1)


def train_compute(folder: Path, epochs: float, counter: Counter, group_rows: int) -> Compute:
    """A train stage folder's compute: its SFT or DPO rows times `epochs`, and every completion
    its GRPO steps sampled and trained on (`group_rows` a step)."""
    from tasks import store

    out = stage_outputs(folder)
    mode, c = out["mode"], Compute()
    if mode in ("sft", "sft_then_grpo", "dpo"):
        dpo = mode == "dpo"
        table = folder / ("pairs.parquet" if dpo else "train.parquet")
        tokens = counter.dpo_file(table) if dpo else counter.sft_file(table)
        c += Compute(out["steps"], tokens * epochs, out["train_rows"] * epochs, 0)
    if mode in ("grpo", "sft_then_grpo"):
        steps = out["grpo_steps"] if mode == "sft_then_grpo" else out["steps"]
        rows = steps * group_rows
        prompt = counter.question_prompts(
            [r["question"] for r in store.read_parquet(folder / "grpo.parquet")]
        )
        c += Compute(steps, rows * (prompt + out["grpo.completion_length"]), rows, rows)
    return c


def sampled(gdir: Path) -> int:
    """Completions a generation's generate and seeds stages sampled."""
    seeds = stage_outputs(gdir / "seeds").get("model_generate", {})
    return stage_outputs(gdir / "generate")["samples"] + seeds.get("rows", 0)


def grpo_rows_per_step(cfg) -> int:
    """Completions one GRPO optimizer step samples and trains on."""
    g = cfg.train.grpo
    return g.prompts_per_step * g.num_generations * cfg.train.grad_accum


def generation_checks(cfg, k: int) -> list[dict]:
    """Per flywheel generation: its challenger against the champion it faced, sampled pass@1
    gain with its interval, and the gate's greedy rule (fell beyond tolerance AND its upper
    bound below 0) on greedy pass@1. `ok`: a promoted generation raised sampled pass@1 and did
    not lower greedy pass@1 beyond noise."""
    from tasks import store
    from tasks.gate import GREEDY, greedy_check

    rows, champ_gen = [], 0
    for g in range(1, cfg.generations + 1):
        gate = stage_outputs(store.stage_dir(cfg.flywheel_dir, g, "gate"))
        before = store.gen_dir(cfg.flywheel_dir, champ_gen) / "eval"
        after = store.gen_dir(cfg.flywheel_dir, g) / "eval"
        (a, ag), (b, bg) = read_items(before), read_items(after)
        gain, low, high = mean_interval(paired_diffs(a, b))
        alarms, note = greedy_check(
            ag,
            bg,
            tolerance=cfg.gate.greedy_tolerance,
            alpha=cfg.gate.alpha,
            n_boot=N_BOOT,
            seed=BOOT_SEED,
        )
        greedy = alarms.get(GREEDY, {})
        promoted = bool(gate["decision"]["promote"])
        rows.append(
            {
                "generation": g,
                "against": champ_gen,
                "promoted": promoted,
                "pass@1_gain": gain,
                "pass@1_gain_ci": [low, high],
                "greedy_change": -greedy["regression"] if greedy else None,
                "greedy_change_ci_high": greedy.get("ci_high"),
                "greedy_ok": greedy.get("ok", True),
                "ok": (not promoted) or (gain > 0 and greedy.get("ok", True)),
                "note": note,
                "reason": gate["decision"]["reason"],
            }
        )
        champ_gen = gate["champion"]["generation"]
    return rows


@functools.cache
def flow_api() -> None:
    """Prefect's API for the flywheel flows, started once per worker as `flywheel run` starts
    it: with a start-up budget that fits a busy machine."""
    from flows.local_api import ensure_api

    ensure_api()


# -- the arms -------------------------------------------------------------------------------------
def arm_config(config: Path, runs: Path, name: str, sets: dict[str, Any]):
    """The bench config for one arm: its own flywheel folder under `runs`, tracking off (the
    arms are compared here, not in MLflow)."""
    from tasks.config import load_config

    return load_config(config, runs_dir=str(runs), name=name, **{"tracking.enabled": False, **sets})


def run_flywheel(cfg) -> dict:
    """The flywheel arm (or a lever): the flow as `flywheel run` runs it, read back (a flywheel
    whose last gate has landed is only read: no Prefect API is started for it)."""
    from tasks import store

    t0 = time.perf_counter()
    if not stage_outputs(store.stage_dir(cfg.flywheel_dir, cfg.generations, "gate")):
        from flows.flywheel import flywheel

        flow_api()
        flywheel(cfg)
    wall = time.perf_counter() - t0
    base_eval = store.gen_dir(cfg.flywheel_dir, 0) / "eval"
    counter = Counter(stage_outputs(base_eval)["model"], cfg.model.prompt_template)
    compute, per_gen = Compute(), []
    for g in range(1, cfg.generations + 1):
        gdir = store.gen_dir(cfg.flywheel_dir, g)
        c = train_compute(gdir / "train", cfg.train.epochs, counter, grpo_rows_per_step(cfg))
        c += Compute(sampled=sampled(gdir))
        compute += c
        per_gen.append({"generation": g, **dataclasses.asdict(c)})
    gate = stage_outputs(store.stage_dir(cfg.flywheel_dir, cfg.generations, "gate"))
    champion = gate["champion"]["generation"]
    return {
        **eval_figures(store.gen_dir(cfg.flywheel_dir, champion) / "eval", cfg.eval.k, base_eval),
        "champion_generation": champion,
        "compute": dataclasses.asdict(compute),
        "generations": per_gen,
        "checks": generation_checks(cfg, cfg.eval.k),
        "wall_s": wall,
    }


def run_rft(cfg, suite: Path, base: str, tokens: float, counter: Counter) -> dict:
    """One-shot RFT: the whole sampling budget from the base at once, curated, SFT once from the
    base for `tokens` training tokens."""
    from tasks import store
    from tasks.stages import curate_stage, eval_stage, generate_stage, seeds_stage, train_stage

    t0 = time.perf_counter()
    seeds = seeds_stage.fn(cfg, 1, suite, base)
    curated = curate_stage.fn(cfg, 1, generate_stage.fn(cfg, 1, base, seeds))
    accepted = store.read_parquet(curated / "accepted.parquet")
    per_epoch = counter.pairs([r["prompt"] for r in accepted], [r["completion"] for r in accepted])
    epochs = matched_epochs(tokens, per_epoch)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": epochs})})
    trained = train_stage.fn(cfg, 1, base)
    gdir = store.gen_dir(cfg.flywheel_dir, 1)
    eval_stage.fn(cfg, gdir / "eval", str(trained / "model"), suite, "p7-rft")
    compute = train_compute(trained, epochs, counter, grpo_rows_per_step(cfg))
    compute += Compute(sampled=sampled(gdir))
    return {
        "seeds": stage_outputs(seeds)["count"],
        "accepted": len(accepted),
        "epochs": epochs,
        "compute": dataclasses.asdict(compute),
        "wall_s": time.perf_counter() - t0,
    }


def run_grpo(
    cfg, suite: Path, base: str, budget: int, tokens: float, counter: Counter, base_eval: Path
) -> dict:
    """GRPO only from the base on `rft`'s seeds: steps capped by the sampling budget and by
    `tokens` (estimated from the base's mean completion length before training)."""
    from tasks import store
    from tasks.stages import eval_stage, read_seeds, seeds_stage, train_stage

    t0 = time.perf_counter()
    seeds = read_seeds(seeds_stage.fn(cfg, 1, suite, base))
    per_row = counter.question_prompts([s.question for s in seeds])
    per_row += stage_outputs(base_eval)["report"]["mean_tokens"]
    steps = grpo_steps(budget, tokens, grpo_rows_per_step(cfg), per_row)
    grpo = cfg.train.grpo.model_copy(update={"max_steps": steps})
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"grpo": grpo})})
    trained = train_stage.fn(cfg, 1, base)
    gdir = store.gen_dir(cfg.flywheel_dir, 1)
    eval_stage.fn(cfg, gdir / "eval", str(trained / "model"), suite, "p7-grpo")
    out = stage_outputs(trained)
    return {
        "seeds": len(seeds),
        "max_steps": steps,
        "reward_first": out.get("grpo.reward_first"),
        "reward_last": out.get("grpo.reward_last"),
        "compute": dataclasses.asdict(
            train_compute(trained, 1.0, counter, grpo_rows_per_step(cfg))
        ),
        "wall_s": time.perf_counter() - t0,
    }


def run_reference(cfg, suite: Path, base: str, rows: int, tokens: float, counter: Counter) -> dict:
    """SFT of the base on `rows` reference solutions of fresh seeds at generation 1's level mix,
    for `tokens` training tokens; its train folder is a stage folder, so a rerun reuses it."""
    from tasks import store
    from tasks.domains import DOMAINS, make_seeds
    from tasks.requests import sft_request
    from tasks.stages import eval_stage, read_seeds
    from tasks.train import train_in_subprocess

    t0 = time.perf_counter()
    folder = store.stage_dir(cfg.flywheel_dir, 1, "train")
    if store.read_manifest(folder) is None:
        dom = DOMAINS[cfg.domain]
        exclude = {s.question for s in read_seeds(suite)}
        rng = random.Random("reference-sft")
        seeds = make_seeds(dom, rows, cfg.seeds.levels, rng, exclude, origin="generator")
        with store.write_stage(folder, "train") as (tmp, out):
            train = [
                {
                    "prompt": cfg.model.prompt_template.format(question=s.question),
                    "completion": dom.solution(s.question),
                }
                for s in seeds
            ]
            store.write_parquet(train, tmp / "train.parquet")
            epochs = matched_epochs(tokens, counter.sft_file(tmp / "train.parquet"))
            # The train stage's request (generation 0: `train.seed` itself), for `epochs` passes.
            request = sft_request(cfg, 0, base, tmp / "train.parquet", tmp / "model")
            metrics = train_in_subprocess(
                dataclasses.replace(request, epochs=epochs, progress=False),
                folder.parent / "train.log",
            )
            out.update(metrics, mode="sft", train_rows=len(train), epochs=epochs, base_model=base)
    epochs = stage_outputs(folder)["epochs"]
    eval_stage.fn(cfg, folder.parent / "eval", str(folder / "model"), suite, "p7-reference")
    compute = train_compute(folder, epochs, counter, grpo_rows_per_step(cfg))
    return {
        "rows": rows,
        "epochs": epochs,
        "compute": dataclasses.asdict(compute),
        "wall_s": time.perf_counter() - t0,
    }


def run_dpo(cfg, source, suite: Path, base: str, counter: Counter) -> dict:
    """DPO from the base on the flywheel's generation-1 seeds, samples and verdicts (copied into
    the DPO arm's folder), with that generation's epochs: against its SFT challenger."""
    from tasks import store
    from tasks.stages import eval_stage, train_stage

    t0 = time.perf_counter()
    src, dst = store.gen_dir(source.flywheel_dir, 1), store.gen_dir(cfg.flywheel_dir, 1)
    for stage in ("seeds", "generate", "curate"):
        if store.read_manifest(dst / stage) is None:
            shutil.rmtree(dst / stage, ignore_errors=True)
            shutil.copytree(src / stage, dst / stage)
    trained = train_stage.fn(cfg, 1, base)
    eval_stage.fn(cfg, dst / "eval", str(trained / "model"), suite, "p7-dpo")
    compute = train_compute(trained, cfg.train.epochs, counter, grpo_rows_per_step(cfg))
    return {
        "pairs": stage_outputs(trained)["train_rows"],
        "compute": dataclasses.asdict(compute),
        "wall_s": time.perf_counter() - t0,
    }


def compare_arms(config: Path, runs: Path, sets: dict[str, Any], extras: list[str]) -> dict:
    """The flywheel and one-shot RFT compared item by item, then the `extras` asked for (of
    `EXTRAS`: the other arms, DPO against SFT)."""
    from tasks import store

    fw = arm_config(config, runs, "p7-flywheel", sets)
    k = fw.eval.k
    arms: dict[str, dict] = {"flywheel": run_flywheel(fw)}
    suite = fw.flywheel_dir / "suite"
    base_eval = store.gen_dir(fw.flywheel_dir, 0) / "eval"
    base = stage_outputs(base_eval)["model"]
    counter = Counter(base, fw.model.prompt_template)
    spent = Compute(**arms["flywheel"]["compute"])
    budget, tokens = spent.sampled, spent.tokens
    first = {"seeds.count": math.ceil(budget / fw.sampling.n)}

    rft = arm_config(config, runs, "p7-rft", {**sets, **first})
    arms["rft"] = run_rft(rft, suite, base, tokens, counter)
    rows = stage_outputs(store.stage_dir(rft.flywheel_dir, 1, "train"))["train_rows"]
    ref = arm_config(config, runs, "p7-reference", sets)
    if "reference" in extras:
        arms["reference"] = run_reference(ref, suite, base, rows, tokens, counter)
    grpo = arm_config(config, runs, "p7-grpo", {**sets, **first, "train.mode": "grpo"})
    if "grpo" in extras:
        arms["grpo"] = run_grpo(grpo, suite, base, budget, tokens, counter, base_eval)
    for name, cfg in (("rft", rft), ("reference", ref), ("grpo", grpo)):
        if name in arms:
            gdir = store.gen_dir(cfg.flywheel_dir, 1)
            arms[name].update(eval_figures(gdir / "eval", k, base_eval))
            arms[name]["gate"] = gate_verdict(fw, base_eval, gdir / "eval")
    fw_items = read_items(Path(arms["flywheel"]["eval"]))[0]
    rft_items = read_items(store.gen_dir(rft.flywheel_dir, 1) / "eval")[0]
    diff = mean_interval(paired_diffs(rft_items, fw_items))
    out = {
        "generations": fw.generations,
        "k": k,
        "base": eval_figures(base_eval, k, None),
        "budget": budget,
        "tokens": tokens,
        "arms": arms,
        "flywheel_vs_rft": dict(zip(("diff", "low", "high"), diff, strict=True)),
    }
    if "dpo" in extras:
        dpo_cfg = arm_config(config, runs, "p7-dpo", {**sets, "train.mode": "dpo"})
        dpo = run_dpo(dpo_cfg, fw, suite, base, counter)
        dpo.update(eval_figures(store.gen_dir(dpo_cfg.flywheel_dir, 1) / "eval", k, base_eval))
        sft = eval_figures(store.gen_dir(fw.flywheel_dir, 1) / "eval", k, base_eval)
        sft["compute"] = arms["flywheel"]["generations"][0]
        out["dpo"] = {"dpo": dpo, "sft": sft}
    return out


# -- fresh items ----------------------------------------------------------------------------------
def seen_questions(flywheels: list[Path], template: str) -> set[str]:
    """Every question the flywheel folders `flywheels` hold: their suites, every landed seeds
    stage, and the prompts of every landed train stage's SFT rows (reference-solution SFT trains
    on questions no seeds stage holds)."""
    import pyarrow.parquet as pq

    from tasks import store
    from tasks.stages import read_seeds

    out: set[str] = set()
    for fw in flywheels:
        for folder in [fw / "suite", *sorted(fw.glob("gen-*/seeds"))]:
            if store.read_manifest(folder) is not None:
                out |= {s.question for s in read_seeds(folder)}
        for folder in sorted(fw.glob("gen-*/train")):
            table = folder / "train.parquet"
            if store.read_manifest(folder) is not None and table.is_file():
                prompts = pq.read_table(table, columns=["prompt"]).column("prompt").to_pylist()
                out |= questions_from_prompts(prompts, template)
    return out


def flywheel_folders(runs: Path) -> list[Path]:
    """The arms' and levers' flywheel folders under `runs`: those with a suite or a generation
    (the reference and DPO arms have no suite of their own); not the shared models."""
    return sorted(
        p
        for p in runs.iterdir()
        if p.is_dir() and ((p / "suite").is_dir() or any(p.glob("gen-[0-9]*")))
    )


def fresh_targets(out: dict) -> dict[str, Path]:
    """The models to score on fresh items, by name, as their suite eval folders: the base, each
    arm's final model and each lever's final champion (a levers-only run takes the base from its
    first lever's generation 0)."""
    targets: dict[str, Path] = {}
    if "base" in out:
        targets["base"] = Path(out["base"]["eval"])
    for name in ARMS:
        if name in out.get("arms", {}):
            targets[name] = Path(out["arms"][name]["eval"])
    for lever, lv in out.get("levers", {}).items():
        folder = Path(lv["eval"])
        targets.setdefault("base", folder.parents[1] / "gen-0000" / "eval")
        targets[f"lever {lever}"] = folder
    return targets


@contextlib.contextmanager
def fresh_lock(folder: Path):
    """One P7 process at a time in `folder`: a levers-only run beside the arms in the same
    workdir must not freeze the same fresh suite or evaluate the same model at once."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def fresh_suite(cfg, folder: Path, runs: Path, n: int, levels: list[int]) -> Path:
    """The fresh items as a suite folder (the frozen suite's format, so `eval_stage` reads it):
    drawn once, excluding every question of every flywheel folder under `runs` then, with the
    eval settings frozen beside them; later runs read it back."""
    from tasks import store
    from tasks.domains import DOMAINS
    from tasks.records import stable_hash, to_rows
    from tasks.stages import check_frozen_eval, eval_settings

    done = stage_outputs(folder)
    if done:
        check_frozen_eval(done.get("eval_settings"), eval_settings(cfg), folder)
        return folder
    exclude = seen_questions(flywheel_folders(runs), cfg.model.prompt_template)
    items = draw_fresh(DOMAINS[cfg.domain], n, levels, exclude)
    with store.write_stage(folder, "suite") as (tmp, out):
        store.write_parquet(to_rows(items), tmp / "seeds.parquet")
        out.update(
            items=len(items),
            levels=sorted(set(levels)),
            per_level=level_quotas(n, levels),
            generator_seed=FRESH_SEED,
            excluded=len(exclude),
            hash=stable_hash(sorted((s.id, s.question, s.answer) for s in items)),
            eval_settings=eval_settings(cfg),
        )
    return folder


def run_fresh(cfg, work: Path, n: int, levels: list[int], targets: dict[str, Path]) -> dict:
    """Each target model scored on `n` fresh items by the eval stage (one eval per model, under
    `work/fresh/<draw>/`, so a rerun redoes nothing); its figures against the base's, and how
    many fresh items its own flywheel folder has seen since the draw (0 unless a run beside
    this one drew seeds after it)."""
    from tasks.records import stable_hash
    from tasks.stages import eval_stage, read_seeds

    root = work / "fresh" / fresh_name(cfg.domain, n, levels)
    with fresh_lock(root):
        suite = fresh_suite(cfg, root / "suite", cfg.runs_dir, n, levels)
        evals = {}
        for name, folder in targets.items():
            model = stage_outputs(folder)["model"]
            evals[name] = root / f"eval-{stable_hash(model, length=12)}"  # one eval per model
            eval_stage.fn(cfg, evals[name], model, suite, f"p7-fresh-{name.replace(' ', '-')}")
    fresh_q = {s.question for s in read_seeds(suite)}
    meta = stage_outputs(suite)
    out = {}
    for name, folder in targets.items():
        base = None if name == "base" else evals["base"]
        fig = eval_figures(evals[name], cfg.eval.k, base)
        own = [] if name == "base" else [folder.parents[1]]
        seen = seen_questions(own, cfg.model.prompt_template)
        out[name] = {
            **fig,
            "n": meta["items"],
            "fresh_levels": meta["levels"],
            "generator_seed": meta["generator_seed"],
            "seen": len(fresh_q & seen),
            "suite": str(suite),
        }
    return out


def main(request: dict) -> dict:
    """Worker: the flywheel and one-shot RFT with the `extras` asked for (unless `arms` is
    false), then each lever, then (with `fresh`) every final model on fresh items; returns the
    figures. Each invocation has its own Prefect home, so a lever can run beside the arms in one
    workdir."""
    work, levers = Path(request["workdir"]), request.get("levers", [])
    arms = request.get("arms", True)
    isolate_services(work / ("arms" if arms else "levers-" + "-".join(levers)))
    config, sets, runs = Path(request["config"]), request.get("set", {}), work / "runs"
    out: dict[str, Any] = {"config": str(config), "set": sets, "levers": {}}
    if arms:
        out.update(compare_arms(config, runs, sets, request.get("extras", list(EXTRAS))))
    for lever in levers:
        cfg = arm_config(config, runs, f"p7-{lever}", {**sets, **LEVERS[lever]})
        out["k"] = cfg.eval.k
        out["levers"][lever] = {"set": LEVERS[lever], **run_flywheel(cfg)}
    n, targets = request.get("fresh", 0), fresh_targets(out)
    if n and targets:
        # The arms' shared config scores every model (no lever changes the engine or the main
        # suite's eval settings).
        cfg = arm_config(config, runs, "p7-flywheel", sets)
        levels = request.get("fresh_levels", list(DEFAULT_LEVELS))
        figures = run_fresh(cfg, work, n, levels, targets)
        out["fresh"] = {
            "n": n,
            "levels": sorted(set(levels)),
            "generator_seed": FRESH_SEED,
            "base": figures.pop("base"),
        }
        for name, fig in figures.items():
            where = out["levers"][name[6:]] if name.startswith("lever ") else out["arms"][name]
            where["fresh"] = fig
    return out


def measure(
    config: Path = DEFAULT_CONFIG,
    workdir: Path | None = None,
    levers: list[str] | None = None,
    sets: dict | None = None,
    arms: bool = True,
    extras: list[str] | None = None,
    fresh: int = 256,
    fresh_levels: list[int] | None = None,
) -> dict:
    """Run the P7 worker on `config` in `workdir` (kept, so a rerun resumes; default: a fresh
    temporary folder); `fresh` items of `fresh_levels` (default 2-3) score every final model
    on problems no arm saw (0: not)."""
    from tasks.subproc import run_worker

    if fresh < 0:
        raise ValueError(f"--fresh: {fresh} items; 0 turns the fresh-item check off")

    unknown = [x for x in levers or [] if x not in LEVERS]
    if unknown:
        raise ValueError(f"--lever: unknown {unknown}; known: {sorted(LEVERS)}")
    unknown = [x for x in extras or [] if x not in EXTRAS]
    if unknown:
        raise ValueError(f"--extras: unknown {unknown}; known: {list(EXTRAS)}")
    with tempfile.TemporaryDirectory(prefix="bench-p7-") as tmp:
        work = Path(workdir or tmp).absolute()
        work.mkdir(parents=True, exist_ok=True)
        request = {
            "config": str(Path(config).absolute()),
            "workdir": str(work),
            "levers": levers or [],
            "set": sets or {},
            "arms": arms,
            "extras": list(EXTRAS if extras is None else extras),
            "fresh": fresh,
            "fresh_levels": list(DEFAULT_LEVELS if fresh_levels is None else fresh_levels),
        }
        log = "bench-p7.log" if arms else f"bench-p7-levers-{'-'.join(levers or [])}.log"
        return run_worker("bench.bench_p7", request, work / log)


# -- the table ------------------------------------------------------------------------------------
def _ci(pair: list[float]) -> str:
    return f"[{pair[0]:.3f}, {pair[1]:.3f}]"


def arm_line(a: dict, k: int) -> str:
    """One arm in words: pass@1 [interval], greedy, pass@k, gain [interval], compute."""
    c = a["compute"]
    gain = f", gain {a['gain']:+.3f} {_ci(a['gain_ci'])}" if "gain" in a else ""
    greedy = "-" if a["greedy"] is None else f"{a['greedy']:.3f}"
    return (
        f"pass@1 {a['pass@1']:.3f} {_ci(a['pass@1_ci'])}, greedy {greedy}, pass@{k} "
        f"{a['pass@k']:.3f}, length {a['mean_tokens']:.1f}{gain}; {c['steps']} steps, "
        f"{c['tokens']:,.0f} tokens, {c['rows_seen']:,.0f} rows seen, {c['sampled']} sampled"
    )


def ratios(m: dict) -> list:
    """The P7 rows: the arms' (when this run had them), then one per lever."""
    from bench.report import Ratio

    out = arm_rows(m) if "arms" in m else []
    out += fresh_ratios(m)
    rft_gain = m["arms"]["rft"]["gain"] if "arms" in m else None
    for lever, lv in m.get("levers", {}).items():
        detail = f"{json.dumps(lv['set'])}: {arm_line(lv, m['k'])}"
        if rft_gain is None:
            out.append(
                Ratio("P7", f"lever {lever}: flywheel gain", lv["gain"], None, "pass@1", detail)
            )
            continue
        out.append(
            Ratio(
                "P7",
                f"lever {lever}: flywheel gain ÷ one-shot RFT gain",
                gain_ratio(lv["gain"], rft_gain),
                None,
                detail=detail,
            )
        )
    return out


def arm_rows(m: dict) -> list:
    from bench.report import Goal, Ratio

    k, arms = m["k"], m["arms"]
    fw, rft = arms["flywheel"], arms["rft"]
    ratio = gain_ratio(fw["gain"], rft["gain"])
    out = [
        Ratio(
            "P7",
            "flywheel gain ÷ one-shot RFT gain (pass@1; equal training tokens and sampling)",
            ratio,
            Goal(">=", 1.2),
            detail=f"{fw['gain']:+.3f} {_ci(fw['gain_ci'])} ÷ {rft['gain']:+.3f} "
            f"{_ci(rft['gain_ci'])} over base pass@1 {m['base']['pass@1']:.3f}; "
            f"{m['generations']} generations; {m['config']}",
            note="" if ratio is not None else "one-shot RFT did not gain; ratio undefined",
        )
    ]
    gate = rft.get("gate")
    if gate is not None:
        held = ratio if gate["promote"] else None
        out.append(
            Ratio(
                "P7",
                "flywheel gain ÷ one-shot RFT gain, RFT held to the flywheel's gate",
                held,
                None,
                detail=f"one-shot RFT against the base: {gate['reason']}",
                note="" if gate["promote"] else "the gate would not promote one-shot RFT's model",
            )
        )
    base = m["base"]
    out.append(
        Ratio(
            "P7",
            "base model pass@1",
            base["pass@1"],
            None,
            unit="pass@1",
            detail=f"pass@1 {_ci(base['pass@1_ci'])}, greedy {base['greedy']:.3f}, pass@{k} "
            f"{base['pass@k']:.3f}, length {base['mean_tokens']:.1f}",
        )
    )
    labels = {
        "flywheel": "flywheel",
        "rft": "one-shot RFT",
        "grpo": "GRPO only",
        "reference": "reference-solution SFT (upper bound)",
    }
    for name in ARMS:
        if name in arms:
            a = arms[name]
            out.append(
                Ratio("P7", f"{labels[name]} pass@1", a["pass@1"], None, "pass@1", arm_line(a, k))
            )
    v = m["flywheel_vs_rft"]
    out.append(
        Ratio(
            "P7",
            "flywheel - one-shot RFT pass@1 (paired over the suite's items)",
            v["diff"],
            None,
            unit="pass@1",
            detail=f"{v['diff']:+.3f}, 95 % paired-bootstrap interval [{v['low']:+.3f}, "
            f"{v['high']:+.3f}]",
        )
    )
    checks = fw["checks"]
    bad = [c for c in checks if not c["ok"]]
    out.append(
        Ratio(
            "P7",
            "promoted generations that did not raise sampled pass@1 or lowered greedy beyond noise",
            float(len(bad)),
            Goal("<=", 0.0),
            unit="gens",
            detail="; ".join(
                f"gen {c['generation']} {'promoted' if c['promoted'] else 'kept out'}: pass@1 "
                f"{c['pass@1_gain']:+.3f} {_ci(c['pass@1_gain_ci'])}, greedy "
                + (f"{c['greedy_change']:+.3f}" if c["greedy_change"] is not None else "-")
                for c in checks
            ),
        )
    )
    if "dpo" not in m:
        return out
    dpo, sft = m["dpo"]["dpo"], m["dpo"]["sft"]
    out.append(
        Ratio(
            "P7",
            "DPO pass@1 ÷ SFT pass@1 (flywheel generation 1's data, from the base)",
            dpo["pass@1"] / sft["pass@1"] if sft["pass@1"] > 0 else None,
            None,
            detail=f"DPO {arm_line(dpo, k)} ({dpo['pairs']} pairs) vs SFT {arm_line(sft, k)}",
        )
    )
    return out


ARM_NAMES = {
    "flywheel": "flywheel",
    "rft": "one-shot RFT",
    "grpo": "GRPO only",
    "reference": "reference SFT (upper bound)",
}


def fresh_rows(m: dict) -> list[tuple[str, dict | None, dict]]:
    """(name, suite figures or None, fresh figures) of every model scored on fresh items: the
    base, the arms, the levers."""
    if "fresh" not in m:
        return []
    rows = [("base", m.get("base"), m["fresh"]["base"])]
    rows += [
        (ARM_NAMES[a], m["arms"][a], m["arms"][a]["fresh"])
        for a in ARMS
        if "fresh" in m.get("arms", {}).get(a, {})
    ]
    rows += [
        (f"lever {name}", lv, lv["fresh"])
        for name, lv in m.get("levers", {}).items()
        if "fresh" in lv
    ]
    return rows


def fresh_line(f: dict, k: int) -> str:
    """One model on fresh items in words: pass@1 [interval], greedy, pass@k, the gains over
    the base with their paired intervals, the draw."""
    greedy = "-" if f["greedy"] is None else f"{f['greedy']:.3f}"
    gain = f", gain {f['gain']:+.3f} {_ci(f['gain_ci'])}" if "gain" in f else ""
    if "greedy_gain" in f:
        gain += f", greedy gain {f['greedy_gain']:+.3f} {_ci(f['greedy_gain_ci'])}"
    levels = ", ".join(f"level {lv} {p:.3f}" for lv, p in sorted(f["levels"].items()))
    return (
        f"pass@1 {f['pass@1']:.3f} {_ci(f['pass@1_ci'])}, greedy {greedy}, pass@{k} "
        f"{f['pass@k']:.3f}{gain} ({levels}); {f['n']} fresh items of levels "
        f"{f['fresh_levels']}, generator seed {f['generator_seed']!r}, {f['seen']} seen by its run"
    )


def fresh_ratios(m: dict) -> list:
    """One row per model scored on fresh items (no goal: the suite's rows carry the goals)."""
    from bench.report import Ratio

    fr = m.get("fresh")
    if fr is None:
        return []
    levels = "-".join(map(str, fr["levels"]))
    return [
        Ratio(
            "P7",
            f"{name} pass@1 on {fr['n']} fresh items (levels {levels})",
            f["pass@1"],
            None,
            "pass@1",
            fresh_line(f, m["k"]),
        )
        for name, _, f in fresh_rows(m)
    ]


def fresh_table(m: dict) -> str:
    """Every model on fresh items beside its suite figures, as one markdown table ('' when the
    run had no fresh items)."""
    rows = fresh_rows(m)
    if not rows:
        return ""
    k = m["k"]
    lines = [
        f"| model | suite pass@1 [95 % CI] | suite greedy | fresh pass@1 [95 % CI] | fresh greedy "
        f"| fresh pass@{k} | fresh gain [95 % CI] | fresh greedy gain [95 % CI] | seen |",
        "|" + "---|" * 9,
    ]

    def num(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    for name, s, f in rows:
        suite = f"{s['pass@1']:.3f} {_ci(s['pass@1_ci'])}" if s else "-"
        gain = f"{f['gain']:+.3f} {_ci(f['gain_ci'])}" if "gain" in f else "-"
        g_gain = (
            f"{f['greedy_gain']:+.3f} {_ci(f['greedy_gain_ci'])}" if "greedy_gain" in f else "-"
        )
        lines.append(
            f"| {name} | {suite} | {num(s['greedy']) if s else '-'} | {f['pass@1']:.3f} "
            f"{_ci(f['pass@1_ci'])} | {num(f['greedy'])} | {f['pass@k']:.3f} | {gain} | "
            f"{g_gain} | {f['seen']} |"
        )
    fr = m["fresh"]
    lines.append(
        f"\n{fr['n']} fresh items of levels {fr['levels']} (generator seed "
        f"{fr['generator_seed']!r}), none in the suite or any seed or training set of any arm or "
        "lever when drawn; `seen`: how many its own run has seen since."
    )
    return "\n".join(lines)


def markdown_table(m: dict) -> str:
    """The arms, DPO and the levers as one markdown table (the README's)."""
    k = m["k"]
    head = (
        f"| arm | pass@1 [95 % CI] | greedy | pass@{k} | length | gain [95 % CI] | steps "
        "| training tokens | rows seen | sampled |"
    )
    lines = [head, "|" + "---|" * 10]
    rows = [("base", m["base"])] if "base" in m else []
    rows += [(ARM_NAMES[a], m["arms"][a]) for a in ARMS if a in m.get("arms", {})]
    if "dpo" in m:
        rows += [("gen 1 SFT", m["dpo"]["sft"]), ("gen 1 DPO", m["dpo"]["dpo"])]
    rows += [(f"lever {name}", lv) for name, lv in m.get("levers", {}).items()]
    for name, a in rows:
        c = a.get("compute", {})
        gain = f"{a['gain']:+.3f} {_ci(a['gain_ci'])}" if "gain" in a else "-"
        greedy = "-" if a["greedy"] is None else f"{a['greedy']:.3f}"
        lines.append(
            f"| {name} | {a['pass@1']:.3f} {_ci(a['pass@1_ci'])} | {greedy} | "
            f"{a['pass@k']:.3f} | {a['mean_tokens']:.1f} | {gain} | {c.get('steps', '-')} | "
            f"{c.get('tokens', 0):,.0f} | {c.get('rows_seen', 0):,.0f} | {c.get('sampled', 0):,} |"
        )
    return "\n".join(lines)


def parse_set(text: str) -> tuple[str, Any]:
    """`KEY=VALUE` of `--set`: the dotted key, and the value read as YAML (as `flywheel --set`)."""
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise SystemExit(f"--set {text!r}: expected KEY=VALUE, e.g. train.learning_rate=1.0e-4")
    return key.strip(), yaml.safe_load(value)


def cli() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    ap.add_argument("--workdir", type=Path, help="keep the runs here (a rerun resumes)")
    ap.add_argument("--lever", default="", help=f"comma list of {', '.join(LEVERS)}")
    ap.add_argument(
        "--no-arms", action="store_true", help="only the levers (beside a run of the arms)"
    )
    ap.add_argument(
        "--extras",
        default=",".join(EXTRAS),
        help="comma list of what runs after the flywheel and one-shot RFT (default: all)",
    )
    ap.add_argument(
        "--fresh",
        type=int,
        default=256,
        help="score every final model on this many fresh items no arm saw (0: off)",
    )
    ap.add_argument(
        "--fresh-levels",
        default=",".join(map(str, DEFAULT_LEVELS)),
        help="comma list of the fresh items' levels (equal shares)",
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config override of every arm, e.g. train.learning_rate=1.0e-4 (repeatable)",
    )
    ap.add_argument("--save", action="store_true", help="write the figures to bench/results/")
    args = ap.parse_args()
    sets = dict(parse_set(x) for x in args.set)
    levers = [x for x in args.lever.split(",") if x]
    started = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    extras = [x for x in args.extras.split(",") if x]
    fresh_levels = [int(x) for x in args.fresh_levels.split(",") if x]
    m = measure(
        args.config,
        args.workdir,
        levers,
        sets,
        arms=not args.no_arms,
        extras=extras,
        fresh=args.fresh,
        fresh_levels=fresh_levels,
    )
    rows = ratios(m)
    for r in rows:
        print(f"{r.key} {r.name}: {r.value}  ({r.detail or r.note})")
    print(markdown_table(m))
    if fresh := fresh_table(m):
        print()
        print(fresh)
    if args.save:
        from bench.report import machine_info

        path = Path(__file__).parent / "results" / f"{started}-p7.json"
        doc = {"machine": machine_info(), "ratios": [r.to_dict() for r in rows], **m}
        path.write_text(json.dumps(doc, indent=2, default=str))
        print(f"wrote {path}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1].endswith(".json"):
        from tasks.subproc import worker_main

        worker_main(main)
    else:
        cli()
