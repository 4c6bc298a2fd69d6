"""The stages as Prefect tasks: read inputs from disk, call the pure functions or a worker
process, write one atomic stage folder.

Each stage first looks for its own manifest: a completed stage is never redone (that is what
resume means here), and anything a stage needs from an earlier one is read from that stage's
folder, so stages hand each other paths, hashes and small outputs only. Prefect's own result
caching is off: the manifests are the cache, and they survive a killed process.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks import store
from tasks.config import FlywheelConfig
from tasks.curate import JUDGE, curate, merge_pool
from tasks.domains import DOMAINS, eval_suite, make_seeds
from tasks.gate import decide, decide_paired
from tasks.generate import generate_in_subprocess
from tasks.judge import qc_metrics
from tasks.judge_run import judge_candidates
from tasks.metrics import report, score_item
from tasks.records import Sample, Seed, from_rows, stable_hash, to_rows
from tasks.seeds import check_disjoint, evolve, read_seed_file
from tasks.subproc import WorkerError, run_worker
from tasks.train import train_in_subprocess

STAGES = ("seeds", "generate", "curate", "train", "eval", "gate")


def _retry_on_worker_crash(task, task_run, state) -> bool:
    """Retry only when a worker process died (OOM, engine crash); a bad input is not retried."""
    try:
        state.result()
    except WorkerError:
        return True
    except Exception:
        return False
    return False


stage_task = task(cache_policy=NO_CACHE, persist_result=False)
heavy_task = task(
    cache_policy=NO_CACHE,
    persist_result=False,
    retries=1,
    retry_delay_seconds=2,
    retry_condition_fn=_retry_on_worker_crash,
)


def _done(folder: Path) -> dict | None:
    man = store.read_manifest(folder)
    return None if man is None else man.outputs


def _engine_args(cfg: FlywheelConfig) -> dict:
    e, m = cfg.engine, cfg.model
    return {
        "backend": e.backend,
        "dtype": e.dtype,
        "gpu_memory_utilization": e.gpu_memory_utilization,
        "max_model_len": e.max_model_len,
        "hf_batch_size": e.hf_batch_size,
        "enforce_eager": e.enforce_eager,
        "prompt_template": m.prompt_template,
        "chat_template": m.chat_template,
        "system_prompt": m.system_prompt,
        "progress": True,
    }


def _sample(
    cfg: FlywheelConfig, model_path: str, seeds: list[Seed], params: dict, tmp: Path, folder: Path
) -> dict:
    """Run the generation worker over `seeds`; it leaves `raw.parquet` in `tmp`."""
    questions = tmp / "questions.parquet"
    store.write_parquet([{"seed_id": s.id, "question": s.question} for s in seeds], questions)
    request = {
        **_engine_args(cfg),
        **params,
        "model_path": model_path,
        "questions_file": str(questions),
        "out_file": str(tmp / "raw.parquet"),
    }
    stats = generate_in_subprocess(request, log_path=tmp.parent / f"{folder.name}.log")
    questions.unlink()
    return stats


def read_seeds(folder: Path) -> list[Seed]:
    return from_rows(Seed, store.read_parquet(Path(folder) / "seeds.parquet"))


# -- set-up stages -------------------------------------------------------------------------------
@stage_task(name="suite")
def suite_stage(cfg: FlywheelConfig) -> Path:
    """Freeze the held-out suite on the first run; later runs read it back unchanged."""
    folder = cfg.flywheel_dir / "suite"
    if _done(folder) is None:
        items = eval_suite(DOMAINS[cfg.domain], cfg.eval.suite_size)
        with store.write_stage(folder, "suite") as (tmp, out):
            store.write_parquet(to_rows(items), tmp / "seeds.parquet")
            out["hash"] = stable_hash(sorted((s.id, s.question, s.answer) for s in items))
            out["items"] = len(items)
    return folder


@stage_task(name="base-model")
def base_model_stage(cfg: FlywheelConfig, suite_folder: Path) -> str:
    """The generation-0 policy: a local checkpoint, or the tiny model made from scratch."""
    if cfg.model.base != "bootstrap":
        path = Path(cfg.model.base)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"model.base: {path} is not a Hugging Face checkpoint folder")
        return str(path)
    b = cfg.bootstrap
    request = dict(
        out_root=str(cfg.runs_dir / "models"),
        hidden_size=b.hidden_size,
        intermediate_size=b.intermediate_size,
        num_layers=b.num_layers,
        num_heads=b.num_heads,
        max_position=b.max_position,
        pretrain_steps=b.pretrain_steps,
        batch_size=b.batch_size,
        learning_rate=b.learning_rate,
        max_difficulty=b.max_difficulty,
        seed=b.seed,
        label_smoothing=b.label_smoothing,
        prompt_template=cfg.model.prompt_template,
        domain=cfg.domain,
        exclude=sorted(s.question for s in read_seeds(suite_folder)),
    )
    return run_worker("tasks.bootstrap", request)["path"]


# -- generation stages ---------------------------------------------------------------------------
@stage_task(name="seeds", task_run_name="gen-{generation:04d}/seeds")
def seeds_stage(cfg: FlywheelConfig, generation: int, suite_folder: Path) -> Path:
    folder = store.stage_dir(cfg.flywheel_dir, generation, "seeds")
    if _done(folder) is not None:
        return folder
    domain = DOMAINS[cfg.domain]
    suite_q = {s.question for s in read_seeds(suite_folder)}
    rng = random.Random(stable_hash(cfg.seeds.seed, generation))
    s = cfg.seeds
    if generation == 1:
        if s.file is not None:
            seeds = read_seed_file(s.file)
            check_disjoint(seeds, suite_q, str(s.file))
        else:
            seeds = make_seeds(domain, s.count, s.levels, rng, suite_q)
        counts, shift = {"original": len(seeds)}, 0
    else:
        prev_folder = store.stage_dir(cfg.flywheel_dir, generation - 1, "seeds")
        prev_man = store.read_manifest(prev_folder)
        curated = store.stage_dir(cfg.flywheel_dir, generation - 1, "curate")
        rates = {
            r["seed_id"]: r["pass_rate"] for r in store.read_parquet(curated / "seed_rates.parquet")
        }
        first = read_seeds(store.stage_dir(cfg.flywheel_dir, 1, "seeds"))
        nxt = evolve(
            read_seeds(prev_folder),
            rates,
            first,
            domain,
            count=s.count,
            levels=s.levels,
            shift=prev_man.outputs["shift"],
            keep_failed=s.keep_failed,
            keep_original=s.keep_original,
            easier_below=s.easier_below,
            harder_above=s.harder_above,
            rng=rng,
            exclude=suite_q,
        )
        seeds, counts, shift = nxt.seeds, nxt.counts, nxt.shift
    with store.write_stage(folder, "seeds") as (tmp, out):
        store.write_parquet(to_rows(seeds), tmp / "seeds.parquet")
        out.update(
            count=len(seeds),
            shift=shift,
            origins=counts,
            difficulty=sum(x.difficulty for x in seeds) / len(seeds),
            hash=stable_hash(sorted(x.id for x in seeds)),
        )
    return folder


@heavy_task(name="generate", task_run_name="gen-{generation:04d}/generate")
def generate_stage(
    cfg: FlywheelConfig, generation: int, model_path: str, seeds_folder: Path
) -> Path:
    folder = store.stage_dir(cfg.flywheel_dir, generation, "generate")
    if _done(folder) is not None:
        return folder
    seeds = read_seeds(seeds_folder)
    sp = cfg.sampling
    params = {
        "n": sp.n,
        "temperature": sp.temperature,
        "top_p": sp.top_p,
        "max_tokens": sp.max_tokens,
        "seed": sp.seed + generation,
    }
    with store.write_stage(folder, "generate") as (tmp, out):
        stats = _sample(cfg, model_path, seeds, params, tmp, folder)
        by_id = {s.id: s for s in seeds}
        samples = []
        for r in store.read_parquet(tmp / "raw.parquet"):
            seed = by_id[r["seed_id"]]
            samples.append(
                Sample(
                    id=Sample.make_id(generation, seed.id, r["sample_index"], model_path, params),
                    seed_id=seed.id,
                    prompt=r["prompt"],
                    completion=r["completion"],
                    answer=seed.answer,
                    difficulty=seed.difficulty,
                    sample_index=r["sample_index"],
                    model=model_path,
                    num_tokens=r["num_tokens"],
                    finish_reason=r["finish_reason"],
                )
            )
        (tmp / "raw.parquet").unlink()
        store.write_parquet(to_rows(samples), tmp / "samples.parquet")
        out.update(
            stats,
            samples=len(samples),
            params=params,
            model=model_path,
            hash=stable_hash(sorted(s.id for s in samples)),
        )
    return folder


@stage_task(name="curate", task_run_name="gen-{generation:04d}/curate")
def curate_stage(cfg: FlywheelConfig, generation: int, generate_folder: Path) -> Path:
    folder = store.stage_dir(cfg.flywheel_dir, generation, "curate")
    if _done(folder) is not None:
        return folder
    samples = from_rows(Sample, store.read_parquet(generate_folder / "samples.parquet"))
    judged = (
        _judge_samples(cfg, generation, samples, folder) if JUDGE in cfg.curation.rewards else None
    )
    columns = {"judge_verdict": [v.verdict for v in judged[0]]} if judged else None
    result = curate(
        samples,
        cfg.curation.rewards,
        cfg.domain,
        cfg.curation.max_per_seed,
        columns=columns,
        combine=cfg.judge.combine,
    )
    with store.write_stage(folder, "curate") as (tmp, out):
        store.write_parquet(to_rows(result.kept), tmp / "accepted.parquet")
        store.write_parquet(result.rows, tmp / "verdicts.parquet")
        store.write_parquet(
            [{"seed_id": k, "pass_rate": v} for k, v in result.seed_pass_rate.items()],
            tmp / "seed_rates.parquet",
        )
        n = max(len(samples), 1)
        out.update(
            counts=result.counts,
            accepted=len(result.kept),
            accept_rate=result.counts.get("accept", 0) / n,
            seed_solve_rate=sum(v > 0 for v in result.seed_pass_rate.values())
            / max(len(result.seed_pass_rate), 1),
            hash=stable_hash(sorted(s.id for s in result.kept)),
        )
        if judged:
            votes, stats = judged
            store.write_parquet(
                [{"sample_id": s.id, **asdict(v)} for s, v in zip(samples, votes, strict=True)],
                tmp / "judge_votes.parquet",
            )
            out["judge"] = {**qc_metrics(votes, result.rules), **_judge_stats(stats)}
    return folder


# -- the judge -----------------------------------------------------------------------------------
def judge_model_path(cfg: FlywheelConfig, suite_folder: Path) -> str:
    """The judge checkpoint: a local one, or the tiny judge made from scratch (cached)."""
    j = cfg.judge
    if j.backend == "openai":
        return j.model  # the served model's name; the server is the environment's
    if j.model != "bootstrap":
        path = Path(j.model)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"judge.model: {path} is not a Hugging Face checkpoint folder")
        return str(path)
    request = dict(
        out_root=str(cfg.runs_dir / "models"),
        rubric=j.rubric,
        max_position=j.max_model_len,
        steps=j.steps,
        batch_size=j.batch_size,
        max_candidate_chars=j.max_candidate_chars,
        seed=j.seed,
        domain=cfg.domain,
        exclude=sorted(s.question for s in read_seeds(suite_folder)),
    )
    return run_worker("tasks.judge_bootstrap", request)["path"]


@stage_task(name="judge-model")
def judge_model_stage(cfg: FlywheelConfig, suite_folder: Path) -> str:
    return judge_model_path(cfg, suite_folder)


def _judge_samples(
    cfg: FlywheelConfig, generation: int, samples: list[Sample], folder: Path
) -> tuple[list, dict]:
    """Every sample judged in one worker run (one engine load, one batched engine call)."""
    j, e = cfg.judge, cfg.engine
    questions = {
        s.id: s.question for s in read_seeds(store.stage_dir(cfg.flywheel_dir, generation, "seeds"))
    }
    settings = {
        "model_path": judge_model_path(cfg, cfg.flywheel_dir / "suite"),
        "rubric": j.rubric,
        "backend": j.backend,
        "k": j.k,
        "temperature": j.temperature,
        "max_tokens": j.max_tokens,
        "max_candidate_chars": j.max_candidate_chars,
        "max_error_share": j.max_error_share,
        "seed": j.seed + generation,
        "dtype": e.dtype,
        "gpu_memory_utilization": e.gpu_memory_utilization,
        "max_model_len": j.max_model_len,
        "hf_batch_size": e.hf_batch_size,
        "enforce_eager": e.enforce_eager,
        "progress": True,
    }
    log = folder.parent / f"{folder.name}-judge.log"
    return judge_candidates(
        [questions[s.seed_id] for s in samples], [s.completion for s in samples], settings, log
    )


def _judge_stats(stats: dict) -> dict:
    keep = ("calls", "seconds", "engine_load_s", "candidates_per_s", "tokens_per_s")
    return {k: float(stats[k]) for k in keep} | {"rubric_version": stats["rubric_version"]}


@heavy_task(name="train", task_run_name="gen-{generation:04d}/train")
def train_stage(cfg: FlywheelConfig, generation: int, base_model: str) -> Path:
    folder = store.stage_dir(cfg.flywheel_dir, generation, "train")
    if _done(folder) is not None:
        return folder
    gens = range(1, generation + 1) if cfg.train.replay else [generation]
    pools = [
        store.read_parquet(store.stage_dir(cfg.flywheel_dir, g, "curate") / "accepted.parquet")
        for g in reversed(gens)
    ]  # newest first: the newest copy of a duplicate wins
    rows = [{"prompt": r["prompt"], "completion": r["completion"]} for r in merge_pool(pools)]
    if not rows:
        raise RuntimeError(
            f"gen-{generation:04d}: no accepted samples to train on; the policy solved nothing. "
            "Use easier seeds.levels, raise sampling.n, or check the verifier."
        )
    t = cfg.train
    with store.write_stage(folder, "train") as (tmp, out):
        store.write_parquet(rows, tmp / "train.parquet")
        metrics = train_in_subprocess(
            {
                "mode": t.mode,
                "base_model": base_model,
                "train_file": str(tmp / "train.parquet"),
                "out_dir": str(tmp / "model"),
                "learning_rate": t.learning_rate,
                "epochs": t.epochs,
                "batch_size": t.batch_size,
                "grad_accum": t.grad_accum,
                "warmup_ratio": t.warmup_ratio,
                "scheduler": t.scheduler,
                "max_length": t.max_length,
                "bf16": t.bf16,
                "seed": t.seed + generation,
                "cpu_threads": t.cpu_threads,
                "progress": True,
            },
            log_path=tmp.parent / f"{folder.name}.log",
        )
        out.update(
            metrics,
            base_model=base_model,
            train_rows=len(rows),
            hash=stable_hash(sorted((r["prompt"], r["completion"]) for r in rows)),
        )
    return folder


@heavy_task(name="eval", task_run_name="{label}/eval")
def eval_stage(
    cfg: FlywheelConfig, folder: Path, model_path: str, suite_folder: Path, label: str
) -> dict:
    """Score one model on the frozen suite: k samples per item, fixed sampling seed."""
    done = _done(folder)
    if done is not None:
        return done["report"]
    suite = read_seeds(suite_folder)
    e = cfg.eval
    params = {
        "n": e.k,
        "temperature": e.temperature,
        "top_p": 1.0,
        "max_tokens": e.max_tokens,
        "seed": e.seed,
    }
    with store.write_stage(folder, "eval") as (tmp, out):
        t0 = time.time()
        stats = _sample(cfg, model_path, suite, params, tmp, folder)
        by_seed: dict[str, list[dict]] = {}
        for r in store.read_parquet(tmp / "raw.parquet"):
            by_seed.setdefault(r["seed_id"], []).append(r)
        items = []
        for s in suite:
            rs = sorted(by_seed.get(s.id, []), key=lambda r: r["sample_index"])
            items.append(
                score_item(
                    s.id,
                    s.difficulty,
                    s.answer,
                    cfg.domain,
                    [r["completion"] for r in rs],
                    [r["num_tokens"] for r in rs],
                    [r["finish_reason"] for r in rs],
                )
            )
        (tmp / "raw.parquet").rename(tmp / "completions.parquet")  # kept for inspection
        store.write_parquet(to_rows(items), tmp / "items.parquet")
        rep = report(items, e.k)
        out.update(
            report=rep, model=model_path, params=params, generate=stats, seconds=time.time() - t0
        )
    return rep


def _eval_items(cfg: FlywheelConfig, generation: int) -> list[dict]:
    return store.read_parquet(
        store.gen_dir(cfg.flywheel_dir, generation) / "eval" / "items.parquet"
    )


@stage_task(name="gate", task_run_name="gen-{generation:04d}/gate")
def gate_stage(
    cfg: FlywheelConfig,
    generation: int,
    champion: dict,
    challenger: dict,
    challenger_version: str | None,
) -> dict:
    """Decide, and write the next champion. The champion moves only when this folder lands."""
    folder = store.stage_dir(cfg.flywheel_dir, generation, "gate")
    done = _done(folder)
    if done is not None:
        return done
    g = cfg.gate
    if g.test == "paired_bootstrap":
        d = decide_paired(
            _eval_items(cfg, champion["generation"]),
            _eval_items(cfg, generation),
            metric=g.metric,
            margin=g.margin,
            alpha=g.alpha,
            n_boot=g.n_boot,
            seed=g.seed,
            guards=g.guards,
        )
    else:
        d = decide(champion["report"], challenger["report"], g.metric, g.margin, cfg.eval.k)
    winner = challenger if d.promote else champion
    with store.write_stage(folder, "gate") as (tmp, out):
        store.write_json(d.to_dict(), tmp / "decision.json")
        out.update(decision=d.to_dict(), champion=winner, challenger_version=challenger_version)
    return _done(folder)
