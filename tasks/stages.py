"""The stages as Prefect tasks: read inputs from disk, call the pure functions or a worker
process, write one atomic stage folder.

Each stage first looks for its own manifest: a completed stage is never redone (that is what
resume means here), and anything a stage needs from an earlier one is read from that stage's
folder, so stages hand each other paths, hashes and small outputs only. Prefect's own result
caching is off: the manifests are the cache, and they survive a killed process.
"""

from __future__ import annotations

import random
import shutil
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks import store
from tasks.config import FlywheelConfig, ServedTeacher, teacher_label
from tasks.curate import JUDGE, curate, merge_pool, mix_replay, rule_settings
from tasks.domains import DOMAINS, eval_suite, make_seeds
from tasks.gate import (
    GREEDY,
    TEST_ARGS,
    check_comparable,
    decide_test,
    greedy_check,
    suite_checks,
    with_alarms,
    with_approval,
    with_note,
)
from tasks.generate import generate_in_subprocess
from tasks.hygiene import SuiteIndex, collapse_checks, decontaminate, dedup, diversity, exact_key
from tasks.judge import cut_counts
from tasks.judge_qc import qc_metrics
from tasks.judge_run import judge_candidates
from tasks.metrics import ItemResult, report, score_item
from tasks.records import Sample, Seed, from_rows, stable_hash, to_rows
from tasks.reward_model import RM, rm_scores
from tasks.seedfile import SeedFileError, SeedFileReport, looks_like_suite, read_seed_file
from tasks.seeds import evolve, model_prompts, problem_text, quotas
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
    cfg: FlywheelConfig,
    model_path: str,
    seeds: list[Seed],
    params: dict,
    tmp: Path,
    folder: Path,
    template: str = "plain",
    student_model: str | None = None,
    source: dict | None = None,
) -> dict:
    """Run the generation worker over `seeds`; it leaves `raw.parquet` in `tmp`.

    `source` overrides the request's model fields (a served teacher's backend and endpoint).
    """
    questions = tmp / "questions.parquet"
    store.write_parquet([{"seed_id": s.id, "question": s.question} for s in seeds], questions)
    request = {
        **_engine_args(cfg),
        **params,
        "template": template,
        "student_model": student_model,
        "model_path": model_path,
        **(source or {}),
        "questions_file": str(questions),
        "out_file": str(tmp / "raw.parquet"),
    }
    t0 = time.perf_counter()
    stats = generate_in_subprocess(request, log_path=tmp.parent / f"{folder.name}.log")
    stats["wall_s"] = time.perf_counter() - t0  # the whole worker process, start to exit
    questions.unlink()
    return stats


def read_seeds(folder: Path) -> list[Seed]:
    return from_rows(Seed, store.read_parquet(Path(folder) / "seeds.parquet"))


# -- set-up stages -------------------------------------------------------------------------------
@stage_task(name="suite")
def suite_stage(cfg: FlywheelConfig) -> Path:
    """Freeze the held-out suite on the first run; later runs read it back unchanged."""
    folder = cfg.flywheel_dir / "suite"
    # What freezes an extra suite (max_drop is a gate setting and may change later).
    extras = {
        k: {"levels": v.levels, "size": v.size} for k, v in sorted(cfg.eval.extra_suites.items())
    }
    done = _done(folder)
    if done is None:
        domain = DOMAINS[cfg.domain]
        items = eval_suite(domain, cfg.eval.suite_size)
        for name, spec in extras.items():  # each from its own stream, disjoint from the rest
            if bad := [x for x in spec["levels"] if not 1 <= x <= domain.max_difficulty]:
                raise ValueError(
                    f"eval.extra_suites.{name}.levels: {bad} outside 1..{domain.max_difficulty}"
                )
            rng = random.Random(f"{domain.name}/extra-suite/{name}/{spec['size']}")
            taken = {s.question for s in items}
            items += make_seeds(
                domain, spec["size"], spec["levels"], rng, taken, origin=f"suite:{name}"
            )
        with store.write_stage(folder, "suite") as (tmp, out):
            store.write_parquet(to_rows(items), tmp / "seeds.parquet")
            out["hash"] = stable_hash(sorted((s.id, s.question, s.answer) for s in items))
            out["items"] = len(items)
            out["extra_suites"] = extras
            out["eval_settings"] = eval_settings(cfg)
        return folder
    check_frozen_eval(done.get("eval_settings"), eval_settings(cfg), folder)
    if done.get("extra_suites", {}) != extras:
        raise ValueError(
            f"eval.extra_suites differs from the suites frozen in {folder} "
            f"({done.get('extra_suites', {})}): generations are only comparable on the same "
            "suites; start a new flywheel name to change them"
        )
    return folder


# The eval settings frozen with the suite: per-item results sampled with other values do not pair.
FROZEN_EVAL = ("k", "temperature", "max_tokens", "seed")


def eval_settings(cfg: FlywheelConfig) -> dict:
    return {name: getattr(cfg.eval, name) for name in FROZEN_EVAL}


def check_frozen_eval(frozen: dict | None, current: dict, folder: Path) -> None:
    """Refuse eval settings that differ from those frozen with the suite (a suite frozen before
    they were recorded has none: then the gate's own check of both evals' settings stands)."""
    if frozen is None:
        return
    changed = [
        f"eval.{k}: {current.get(k)!r} (frozen: {v!r})"
        for k, v in frozen.items()
        if current.get(k) != v
    ]
    if changed:
        raise ValueError(
            f"{'; '.join(changed)}: the eval settings are frozen with the suite in {folder}; "
            "generations are only comparable under the same settings; restore them or start a "
            "new flywheel name to change them"
        )


def _suite_of(seed: Seed) -> str | None:
    """The extra suite an item of the suite folder belongs to (None: the main suite)."""
    return seed.origin.removeprefix("suite:") if seed.origin.startswith("suite:") else None


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
def load_seed_file(cfg: FlywheelConfig, suite_questions: list[str]) -> SeedFileReport:
    """The user's seed file, validated row by row under the config's policy; refused whole when
    it is an eval suite. Needs no stage folder, so the flow checks it before any work."""
    s = cfg.seeds
    report = read_seed_file(
        s.file,
        domain=cfg.domain,
        data_dirs=s.data_dirs,
        on_bad_row=s.on_bad_row,
        max_chars=s.max_chars,
    )
    suite_keys = {exact_key(q) for q in suite_questions}
    why = looks_like_suite(report.path, report.seeds, suite_keys, exact_key, s.suite_file_share)
    if why:
        raise SeedFileError(
            f"{s.file}: refused as a seed source: {why}. Seeding from the eval suite would "
            "make every later evaluation meaningless."
        )
    return report


def check_seed_inputs(cfg: FlywheelConfig) -> None:
    """Fail before any folder is made when generation 1 would read a bad seed file."""
    first = store.stage_dir(cfg.flywheel_dir, 1, "seeds")
    if cfg.seeds.file is None or _done(first) is not None:
        return
    suite = eval_suite(DOMAINS[cfg.domain], cfg.eval.suite_size)
    load_seed_file(cfg, [x.question for x in suite])


def _model_problems(
    cfg: FlywheelConfig,
    generation: int,
    model_path: str,
    prompts: list,
    tmp: Path,
    folder: Path,
) -> tuple[dict[str, list[Seed]], list[dict], dict]:
    """Rewrites and proposals from the policy, one engine load; only problems the domain can
    answer come back as seeds. Also returns every candidate row and the sampling stats."""
    s, sp = cfg.seeds, cfg.sampling
    params = {
        "n": s.model_samples,
        "temperature": sp.temperature,
        "top_p": sp.top_p,
        "max_tokens": sp.max_tokens,
        "seed": sp.seed + generation,
        "prompt_template": "{question}",  # the seeds templates are the whole prompt
    }
    asks = [Seed(f"{p.kind}-{i}", p.prompt, None) for i, p in enumerate(prompts)]
    stats = _sample(cfg, model_path, asks, params, tmp, folder)
    kinds = {a.id: p.kind for a, p in zip(asks, prompts, strict=True)}
    read = DOMAINS[cfg.domain].read_problem
    out: dict[str, list[Seed]] = {"rewrites": [], "proposed": []}
    rows = []
    for r in store.read_parquet(tmp / "raw.parquet"):
        kind = kinds[r["seed_id"]]
        text = problem_text(r["prompt"], r["completion"], s.problem_marker)
        seed = read(text, kind)
        if seed is not None:
            out[kind].append(seed)
        rows.append(
            {"kind": kind, "prompt": r["prompt"], "problem": text, "valid": seed is not None}
        )
    (tmp / "raw.parquet").unlink()
    return out, rows, stats


@stage_task(name="seeds", task_run_name="gen-{generation:04d}/seeds")
def seeds_stage(
    cfg: FlywheelConfig, generation: int, suite_folder: Path, model_path: str | None = None
) -> Path:
    """The generation's seeds. From generation 2 on they evolve from the last one's pass rates;
    `model_path` (the champion) writes the rewrites and proposals when their weights ask."""
    folder = store.stage_dir(cfg.flywheel_dir, generation, "seeds")
    if _done(folder) is not None:
        return folder
    domain = DOMAINS[cfg.domain]
    suite_questions = [x.question for x in read_seeds(suite_folder)]
    suite_q = set(suite_questions)
    rng = random.Random(stable_hash(cfg.seeds.seed, generation))
    s, h = cfg.seeds, cfg.hygiene
    started = time.perf_counter()
    bad_rows: list[dict] = []
    extra: dict = {}
    with store.write_stage(folder, "seeds") as (tmp, out):
        if generation == 1:
            if s.file is not None:
                report = load_seed_file(cfg, suite_questions)
                seeds = report.seeds
                bad_rows = [
                    {"file": b.file, "line": b.line, "reason": b.reason} for b in report.bad
                ]
            else:
                seeds = make_seeds(domain, s.count, s.levels, rng, suite_q, origin="generator")
        else:
            prev = read_seeds(store.stage_dir(cfg.flywheel_dir, generation - 1, "seeds"))
            curated = store.stage_dir(cfg.flywheel_dir, generation - 1, "curate")
            rates = {
                r["seed_id"]: r["pass_rate"]
                for r in store.read_parquet(curated / "seed_rates.parquet")
            }
            quota = quotas(s.sources, s.count - int(s.keep_original * s.count))
            prompts = model_prompts(
                prev,
                rates,
                quota,
                failure_below=s.failure_below,
                floor=s.curriculum_floor,
                rewrite_template=s.rewrite_template,
                propose_template=s.propose_template,
                samples=s.model_samples,
                oversample=s.oversample,
                rng=rng,
            )
            model_seeds = None
            if prompts and model_path is not None:
                model_seeds, rows, stats = _model_problems(
                    cfg, generation, model_path, prompts, tmp, folder
                )
                store.write_parquet(rows, tmp / "model_problems.parquet")
                extra["model_problems"] = {
                    k: {
                        "asked": sum(r["kind"] == k for r in rows),
                        "valid": sum(r["kind"] == k and r["valid"] for r in rows),
                    }
                    for k in ("rewrites", "proposed")
                }
                extra["model_generate"] = stats
            nxt = evolve(
                prev,
                rates,
                read_seeds(store.stage_dir(cfg.flywheel_dir, 1, "seeds")),
                domain,
                count=s.count,
                sources=s.sources,
                keep_original=s.keep_original,
                failure_below=s.failure_below,
                floor=s.curriculum_floor,
                rng=rng,
                exclude=suite_q,
                model_seeds=model_seeds,
            )
            seeds = nxt.seeds
            extra.update(
                level_rates=nxt.level_rates, level_weights=nxt.level_weights, short=nxt.short
            )
        # Every batch, whatever its source: eval items out (counted), then duplicates out.
        clean = decontaminate(
            seeds,
            lambda x: x.question,
            SuiteIndex(suite_questions, h.ngram, h.ngram_min_tokens),
            h.ngram_threshold,
        )
        dd = dedup(
            [x.question for x in clean.kept],
            near_threshold=h.near_dup,
            shingle=h.shingle,
            num_perm=h.num_perm,
        )
        seeds = [clean.kept[i] for i in dd.keep]
        if not seeds:
            raise SeedFileError(
                f"gen-{generation:04d}: no seeds left after decontamination and dedup "
                f"(dropped {clean.counts}, duplicates exact {dd.exact} near {dd.near})"
            )
        store.write_parquet(to_rows(seeds), tmp / "seeds.parquet")
        if bad_rows:
            store.write_parquet(bad_rows, tmp / "bad_rows.parquet")
        out.update(
            count=len(seeds),
            origins=dict(Counter(x.origin for x in seeds)),
            difficulty=sum(x.difficulty for x in seeds) / len(seeds),
            levels=dict(sorted(Counter(x.difficulty for x in seeds).items())),
            decontaminated=clean.counts,
            duplicates={"exact": dd.exact, "near": dd.near},
            bad_rows=len(bad_rows),
            hash=stable_hash(sorted(x.id for x in seeds)),
            seconds=time.perf_counter() - started,  # with model_generate.wall_s inside it
            **extra,
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
    d = cfg.distill
    generators = _generators(cfg, model_path)
    by_id = {s.id: s for s in seeds}
    with store.write_stage(folder, "generate") as (tmp, out):
        samples, runs = [], []
        # Every generator (the policy, then each teacher) samples every seed under every
        # template; the pool is curated as one, and each sample records its model and template.
        for generator, source in generators:
            for template in d.templates:
                stats = _sample(
                    cfg,
                    generator,
                    seeds,
                    params,
                    tmp,
                    folder,
                    template,
                    student_model=model_path,
                    source=source,
                )
                # Plain policy samples keep the ids they always had; other sources differ by
                # model (already in the id) and by template.
                id_params = params if template == "plain" else {**params, "template": template}
                rows = store.read_parquet(tmp / "raw.parquet")
                # A served teacher's prompt whose requests all failed is an infrastructure
                # failure: counted, and kept out of the pool rather than curated as a reject.
                stats["errors"] = sum(r["finish_reason"] == "error" for r in rows)
                for r in rows:
                    if r["finish_reason"] == "error":
                        continue
                    seed = by_id[r["seed_id"]]
                    samples.append(
                        Sample(
                            id=Sample.make_id(
                                generation, seed.id, r["sample_index"], generator, id_params
                            ),
                            seed_id=seed.id,
                            prompt=r["train_prompt"],
                            completion=r["completion"],
                            answer=seed.answer,
                            difficulty=seed.difficulty,
                            sample_index=r["sample_index"],
                            model=generator,
                            num_tokens=r["num_tokens"],
                            finish_reason=r["finish_reason"],
                            template=template,
                        )
                    )
                (tmp / "raw.parquet").unlink()
                runs.append({"model": generator, "template": template, **stats})
        store.write_parquet(to_rows(samples), tmp / "samples.parquet")
        out.update(
            _pooled_stats(runs),
            samples=len(samples),
            params=params,
            model=model_path,
            sources=runs,
            hash=stable_hash(sorted(s.id for s in samples)),
        )
    return folder


def _generators(cfg: FlywheelConfig, model_path: str) -> list[tuple[str, dict | None]]:
    """(what samples record as their model, worker-request overrides) per generator: the
    policy, then each teacher; a local teacher must be a checkpoint folder."""
    d = cfg.distill
    out: list[tuple[str, dict | None]] = [(model_path, None)] if d.include_policy else []
    for i, teacher in enumerate(d.teachers):
        if isinstance(teacher, ServedTeacher):
            served = {"backend": teacher.backend, "model_path": teacher.model}
            served |= {"base_url": teacher.base_url, "api_key_env": teacher.api_key_env}
            out.append((teacher_label(teacher), served))
            continue
        if not (Path(teacher) / "config.json").is_file():
            raise FileNotFoundError(
                f"distill.teachers[{i}]: {teacher} is not a Hugging Face checkpoint folder"
            )
        out.append((teacher_label(teacher), None))
    return out


def _pooled_stats(runs: list[dict]) -> dict:
    """One generation's totals over its (model, template) runs; rates from the totals."""
    total = {k: sum(r[k] for r in runs) for k in ("rows", "seconds", "tokens")}
    total.update({k: sum(r[k] for r in runs) for k in ("engine_load_s", "generate_s", "wall_s")})
    total["tokens_per_s"] = total["tokens"] / max(total["generate_s"], 1e-9)
    return total


@stage_task(name="curate", task_run_name="gen-{generation:04d}/curate")
def curate_stage(cfg: FlywheelConfig, generation: int, generate_folder: Path) -> Path:
    folder = store.stage_dir(cfg.flywheel_dir, generation, "curate")
    if _done(folder) is not None:
        return folder
    samples = from_rows(Sample, store.read_parquet(generate_folder / "samples.parquet"))
    judged = (
        _judge_samples(cfg, generation, samples, folder) if JUDGE in cfg.curation.rewards else None
    )
    columns = {"judge_verdict": [v.verdict for v in judged[0]]} if judged else {}
    if RM in cfg.curation.rewards:
        columns["rm_score"] = _rm_scores(cfg, samples)
    h = cfg.hygiene
    started = time.perf_counter()
    result = curate(
        samples,
        cfg.curation.rewards,
        cfg.domain,
        cfg.curation.max_per_seed,
        near_dup=h.near_dup,
        shingle=h.shingle,
        num_perm=h.num_perm,
        columns=columns,
        combine=cfg.judge.combine,
        settings=rule_settings(
            cfg.sampling.max_tokens, cfg.curation.length_buffer, cfg.curation.repetition_ngram
        ),
    )
    curate_s = time.perf_counter() - started  # the pure pass only, no file I/O
    with store.write_stage(folder, "curate") as (tmp, out):
        store.write_parquet(to_rows(result.kept), tmp / "accepted.parquet")
        store.write_parquet(result.rows, tmp / "verdicts.parquet")
        store.write_parquet(
            [
                {"seed_id": k, "pass_rate": v, "paths": result.paths[k]}
                for k, v in result.seed_pass_rate.items()
            ],
            tmp / "seed_rates.parquet",
        )
        n = max(len(samples), 1)
        out.update(
            counts=result.counts,
            accepted=len(result.kept),
            accept_rate=result.counts.get("accept", 0) / n,
            seed_solve_rate=sum(v > 0 for v in result.seed_pass_rate.values())
            / max(len(result.seed_pass_rate), 1),
            reasoning_paths=sum(result.paths.values())
            / max(sum(v > 0 for v in result.paths.values()), 1),
            diversity=result.diversity,
            hash=stable_hash(sorted(s.id for s in result.kept)),
            seconds=curate_s,
        )
        if judged:
            votes, stats = judged
            store.write_parquet(
                [{"sample_id": s.id, **asdict(v)} for s, v in zip(samples, votes, strict=True)],
                tmp / "judge_votes.parquet",
            )
            out["judge"] = {
                **qc_metrics(votes, result.rules),
                **cut_counts([s.completion for s in samples], cfg.judge.candidate_chars()),
                **_judge_stats(stats),
            }
    return folder


def _rm_scores(cfg: FlywheelConfig, samples: list[Sample]) -> list[float]:
    """The reward model's P(accept) of every sample, in one worker run (one model load)."""
    path = cfg.curation.reward_model
    if path is None or not (Path(path) / "config.json").is_file():
        raise FileNotFoundError(
            f"curation.reward_model: {path} is not a reward-model folder "
            "(`flywheel train-rm` writes <runs_dir>/<name>/reward-model)"
        )
    return rm_scores(str(path), [s.prompt for s in samples], [s.completion for s in samples])


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
    # The judge also learns from the base policy's own samples: it is made after the policy.
    policy = base_model_stage.fn(cfg, suite_folder) if j.policy_samples else None
    return run_worker("tasks.judge_bootstrap", judge_request(cfg, suite_folder, policy))["path"]


def judge_request(cfg: FlywheelConfig, suite_folder: Path, policy: str | None) -> dict:
    """The bootstrap judge's worker request. Policy samples are drawn with the flywheel's own
    generation settings, so the judge trains on what curation will show it."""
    j, smp, m = cfg.judge, cfg.sampling, cfg.model
    request = dict(
        out_root=str(cfg.runs_dir / "models"),
        rubric=j.rubric,
        max_position=j.max_model_len,
        steps=j.steps,
        batch_size=j.batch_size,
        max_candidate_chars=j.candidate_chars(),
        seed=j.seed,
        domain=cfg.domain,
        exclude=sorted(s.question for s in read_seeds(suite_folder)),
    )
    if not j.policy_samples:
        return request
    if policy is None:
        raise ValueError("judge.policy_samples > 0 needs the base policy's checkpoint")
    return request | dict(
        policy=policy,
        policy_samples=j.policy_samples,
        policy_sampling=dict(
            temperature=smp.temperature,
            top_p=smp.top_p,
            max_tokens=smp.max_tokens,
            prompt_template=m.prompt_template,
            chat_template=m.chat_template,
            system_prompt=m.system_prompt,
            max_model_len=cfg.engine.max_model_len,
            dtype=cfg.engine.dtype,
            hf_batch_size=cfg.engine.hf_batch_size,
        ),
    )


@stage_task(name="judge-model")
def judge_model_stage(cfg: FlywheelConfig, suite_folder: Path) -> str:
    return judge_model_path(cfg, suite_folder)


def judge_settings(cfg: FlywheelConfig, model_path: str, seed: int) -> dict:
    """The judge worker's settings from the config (`tasks.judge_run`), for the curate stage and
    the judge benchmarks alike."""
    j, e = cfg.judge, cfg.engine
    return {
        "model_path": model_path,
        "rubric": j.rubric,
        "backend": j.backend,
        "k": j.k,
        "temperature": j.temperature,
        "max_tokens": j.max_tokens,
        "max_candidate_chars": j.candidate_chars(),
        "max_error_share": j.max_error_share,
        "seed": seed,
        "dtype": e.dtype,
        "gpu_memory_utilization": e.gpu_memory_utilization,
        "max_model_len": j.max_model_len,
        "hf_batch_size": e.hf_batch_size,
        "enforce_eager": e.enforce_eager,
    }


def _judge_samples(
    cfg: FlywheelConfig, generation: int, samples: list[Sample], folder: Path
) -> tuple[list, dict]:
    """Every sample judged in one worker run (one engine load, one batched engine call)."""
    questions = {
        s.id: s.question for s in read_seeds(store.stage_dir(cfg.flywheel_dir, generation, "seeds"))
    }
    model = judge_model_path(cfg, cfg.flywheel_dir / "suite")
    settings = judge_settings(cfg, model, seed=cfg.judge.seed + generation) | {"progress": True}
    log = folder.parent / f"{folder.name}-judge.log"
    return judge_candidates(
        [questions[s.seed_id] for s in samples], [s.completion for s in samples], settings, log
    )


def _judge_stats(stats: dict) -> dict:
    keep = ("calls", "seconds", "engine_load_s", "candidates_per_s", "tokens_per_s")
    return {k: float(stats[k]) for k in keep} | {"rubric_version": stats["rubric_version"]}


@heavy_task(name="train", task_run_name="gen-{generation:04d}/train")
def train_stage(cfg: FlywheelConfig, generation: int, base_model: str) -> Path:
    """Train the challenger with this generation's recipe (`train.mode` or `train.schedule`).

    `sft` trains on accepted samples; `grpo` on the generation's seeds (questions and gold
    answers: the policy samples its own groups); `sft_then_grpo` runs GRPO from the SFT model
    of the same generation, and keeps only the final model.
    """
    folder = store.stage_dir(cfg.flywheel_dir, generation, "train")
    if _done(folder) is not None:
        return folder
    stage = cfg.train.stage(generation)
    log_path = folder.parent / f"{folder.name}.log"
    with store.write_stage(folder, "train") as (tmp, out):
        t0 = time.perf_counter()
        out.update(mode=stage.mode, label=stage.label)
        model_in = base_model
        if stage.mode == "gkd":
            rows = _sft_rows(cfg, generation)
            store.write_parquet(rows, tmp / "train.parquet")
            metrics = train_in_subprocess(
                _gkd_request(cfg, generation, base_model, tmp / "train.parquet", tmp / "model"),
                log_path,
            )
            out.update(
                metrics,
                train_rows=len(rows),
                hash=stable_hash(sorted((r["prompt"], r["completion"]) for r in rows)),
            )
        if stage.mode in ("sft", "sft_then_grpo"):
            rows = _sft_rows(cfg, generation)
            store.write_parquet(rows, tmp / "train.parquet")
            sft_dir = tmp / ("model" if stage.mode == "sft" else "sft-model")
            metrics = train_in_subprocess(
                _sft_request(cfg, generation, base_model, tmp / "train.parquet", sft_dir), log_path
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
                _grpo_request(cfg, generation, model_in, tmp / "grpo.parquet", tmp / "model"),
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


def _sft_request(
    cfg: FlywheelConfig, generation: int, base_model: str, train_file: Path, out_dir: Path
) -> dict:
    t = cfg.train
    return {
        "mode": "sft",
        "base_model": base_model,
        "train_file": str(train_file),
        "out_dir": str(out_dir),
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
        "packing": t.packing,
        "min_lr_ratio": t.min_lr_ratio,
        "gradient_checkpointing": t.gradient_checkpointing,
        "progress": True,
    }


def _gkd_request(
    cfg: FlywheelConfig, generation: int, base_model: str, train_file: Path, out_dir: Path
) -> dict:
    """SFT's optimisation settings plus the teacher and GKD's mixing knobs."""
    k = cfg.train.gkd
    sft = _sft_request(cfg, generation, base_model, train_file, out_dir)
    for key in ("packing", "min_lr_ratio"):  # the GKD collator pads; no packing
        sft.pop(key)
    return {
        **sft,
        "mode": "gkd",
        "teacher": str(k.teacher if k.teacher is not None else cfg.distill.teachers[0]),
        "lmbda": k.lmbda,
        "beta": k.beta,
        "temperature": k.temperature,
        "max_new_tokens": k.max_new_tokens,
    }


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


def _grpo_request(
    cfg: FlywheelConfig, generation: int, base_model: str, train_file: Path, out_dir: Path
) -> dict:
    t, g, m = cfg.train, cfg.train.grpo, cfg.model
    return {
        "mode": "grpo",
        "base_model": base_model,
        "train_file": str(train_file),
        "out_dir": str(out_dir),
        "rewards": t.grpo_rewards(generation),
        "learning_rate": g.learning_rate,
        "epochs": g.epochs,
        "max_steps": g.max_steps,
        "prompts_per_step": g.prompts_per_step,
        "grad_accum": t.grad_accum,
        "num_generations": g.num_generations,
        "max_completion_length": g.max_completion_length,
        "temperature": g.temperature,
        "epsilon": g.epsilon,
        "beta": g.beta,
        "loss_type": g.loss_type,
        "num_iterations": g.num_iterations,
        "scale_rewards": g.scale_rewards,
        "drop_zero_signal": g.drop_zero_signal,
        "length_buffer": g.length_buffer,
        "ngram": g.repetition_ngram,
        "warmup_ratio": t.warmup_ratio,
        "scheduler": t.scheduler,
        "max_length": t.max_length,
        "bf16": t.bf16,
        "seed": t.seed + generation,
        "prompt_template": m.prompt_template,
        "chat_template": m.chat_template,
        "system_prompt": m.system_prompt,
        "gradient_checkpointing": t.gradient_checkpointing,
        "cpu_threads": t.cpu_threads,
        "progress": True,
    }


@heavy_task(name="eval", task_run_name="{label}/eval")
def eval_stage(
    cfg: FlywheelConfig, folder: Path, model_path: str, suite_folder: Path, label: str
) -> dict:
    """Score one model on the frozen suite: k samples per item, fixed sampling seed; with
    `eval.greedy` also one greedy sample per item (`greedy_pass@1`, `greedy_items.parquet`)."""
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
        parts = _scored(cfg, suite, tmp / "raw.parquet", tmp / "completions.parquet")
        main = parts.pop(None)
        store.write_parquet(to_rows(main), tmp / "items.parquet")  # the main suite's items
        rep = report(main, e.k)
        suites = {name: report(group, e.k) for name, group in sorted(parts.items())}
        if e.greedy:  # the same worker at T=0, one sample per item; scored per item to pair
            greedy_params = {**params, "n": 1, "temperature": 0.0}
            out["greedy_params"] = greedy_params
            out["greedy_generate"] = _sample(cfg, model_path, suite, greedy_params, tmp, folder)
            greedy = _scored(cfg, suite, tmp / "raw.parquet", tmp / "greedy_completions.parquet")
            greedy_main = greedy.pop(None)
            store.write_parquet(to_rows(greedy_main), tmp / GREEDY_ITEMS)
            rep[GREEDY] = report(greedy_main, 1)["pass@1"]
            for name, group in greedy.items():
                suites[name][GREEDY] = report(group, 1)["pass@1"]
        out.update(
            report=rep,
            suites=suites,
            model=model_path,
            params=params,
            generate=stats,
            seconds=time.time() - t0,
        )
    return rep


GREEDY_ITEMS = "greedy_items.parquet"


def _scored(
    cfg: FlywheelConfig, suite: list[Seed], raw: Path, keep_as: Path
) -> dict[str | None, list[ItemResult]]:
    """Score the worker's samples of every suite item, grouped by suite (None: the main one);
    the samples file is kept under `keep_as` for inspection."""
    by_seed: dict[str, list[dict]] = {}
    for r in store.read_parquet(raw):
        by_seed.setdefault(r["seed_id"], []).append(r)
    raw.rename(keep_as)
    parts: dict[str | None, list[ItemResult]] = {}
    for s in suite:
        rs = sorted(by_seed.get(s.id, []), key=lambda r: r["sample_index"])
        item = score_item(
            s.id,
            s.difficulty,
            s.answer,
            cfg.domain,
            [r["completion"] for r in rs],
            [r["num_tokens"] for r in rs],
            [r["finish_reason"] for r in rs],
        )
        parts.setdefault(_suite_of(s), []).append(item)
    return parts


def _eval_items(cfg: FlywheelConfig, generation: int) -> list[dict]:
    return store.read_parquet(
        store.gen_dir(cfg.flywheel_dir, generation) / "eval" / "items.parquet"
    )


def _collapse_guards(cfg: FlywheelConfig, champion_gen: int, generation: int) -> dict[str, dict]:
    """Diversity of both models' completions on the frozen suite; a configured drop is an alarm
    that blocks promotion (a challenger that wins by collapsing onto a few outputs)."""
    limits = cfg.hygiene.collapse_max_drop
    if not limits:
        return {}

    def figures(g: int) -> dict[str, float]:
        rows = store.read_parquet(
            store.gen_dir(cfg.flywheel_dir, g) / "eval" / "completions.parquet"
        )
        return diversity([r["completion"] for r in rows])

    checks = collapse_checks(figures(champion_gen), figures(generation), limits)
    return {f"collapse.{k}": v for k, v in checks.items()}


@stage_task(name="gate", task_run_name="gen-{generation:04d}/gate")
def gate_stage(
    cfg: FlywheelConfig,
    generation: int,
    champion: dict,
    challenger: dict,
    challenger_version: str | None,
    approval: dict | None = None,
) -> dict:
    """Decide, and write the next champion. The champion moves only when this folder lands.
    `approval` is a person's answer (`gate.approval`), asked only when the test would promote."""
    folder = store.stage_dir(cfg.flywheel_dir, generation, "gate")
    done = _done(folder)
    if done is not None:
        return done
    d = with_approval(gate_decision(cfg, generation, champion, challenger), approval)
    winner = challenger if d.promote else champion
    with store.write_stage(folder, "gate") as (tmp, out):
        store.write_json(d.to_dict(), tmp / "decision.json")
        out.update(
            decision=d.to_dict(),
            champion=winner,
            challenger_version=challenger_version,
            approval=approval,
        )
    return _done(folder)


def gate_decision(cfg: FlywheelConfig, generation: int, champion: dict, challenger: dict):
    """What the configured test says of challenger vs champion (reads their eval items).
    Two evals sampled under different settings are refused before any test runs."""
    g, ref = cfg.gate, champion["generation"]
    check_comparable(
        _eval_outputs(cfg, ref).get("params", {}),
        _eval_outputs(cfg, generation).get("params", {}),
        where=f"(champion gen-{ref:04d}, challenger gen-{generation:04d})",
    )
    d = decide_test(
        _eval_items(cfg, ref), _eval_items(cfg, generation), **g.model_dump(include=set(TEST_ARGS))
    )
    alarms = _collapse_guards(cfg, ref, generation)
    alarms |= suite_checks(
        _eval_suites(cfg, ref),
        _eval_suites(cfg, generation),
        {k: v.max_drop for k, v in cfg.eval.extra_suites.items()},
    )
    greedy, note = greedy_check(
        _greedy_items(cfg, ref),
        _greedy_items(cfg, generation),
        tolerance=g.greedy_tolerance,
        alpha=g.alpha,
        n_boot=g.n_boot,
        seed=g.seed,
    )
    return with_note(with_alarms(d, alarms | greedy), note)


def _eval_outputs(cfg: FlywheelConfig, generation: int) -> dict:
    man = store.read_manifest(store.gen_dir(cfg.flywheel_dir, generation) / "eval")
    return man.outputs if man else {}


def _greedy_items(cfg: FlywheelConfig, generation: int) -> list[dict] | None:
    """A generation's greedy eval items (None for an eval made without them)."""
    path = store.gen_dir(cfg.flywheel_dir, generation) / "eval" / GREEDY_ITEMS
    return store.read_parquet(path) if path.is_file() else None


def _eval_suites(cfg: FlywheelConfig, generation: int) -> dict[str, dict]:
    """The extra suites' reports of a generation's eval ({} for evals made before them)."""
    return _eval_outputs(cfg, generation).get("suites", {})
