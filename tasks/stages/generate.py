"""The generate stage: every generator (the policy, then each teacher) samples every seed under
every template, then, with `sampling.rationalize.n`, the policy samples the seeds it failed
again with the answer as a hint (STaR, `tasks.rationalize`); the pool is curated as one."""

from __future__ import annotations

from pathlib import Path

from tasks import store
from tasks.config import FlywheelConfig, ServedTeacher, teacher_label
from tasks.rationalize import RATIONALIZE, failed_seeds, verified
from tasks.records import Sample, Seed, stable_hash, to_rows
from tasks.requests import (
    EngineSpec,
    SamplingSpec,
    engine_spec,
    rationalize_sampling,
    sampling_spec,
    served_engine,
    to_json,
)
from tasks.stages.common import (
    completed,
    heavy_task,
    read_seeds,
    sample_seeds,
)


@heavy_task(name="generate", task_run_name="gen-{generation:04d}/generate")
def generate_stage(
    cfg: FlywheelConfig, generation: int, model_path: str, seeds_folder: Path
) -> Path:
    folder = store.stage_dir(cfg.flywheel_dir, generation, "generate")
    if completed(folder) is not None:
        return folder
    seeds = read_seeds(seeds_folder)
    sampling = sampling_spec(cfg, generation)
    params = to_json(sampling)  # what sample ids hash and the manifest records
    generators = _generators(cfg, model_path)
    with store.write_stage(folder, "generate") as (tmp, out):
        samples, runs = [], []
        # Every generator (the policy, then each teacher) samples every seed under every
        # template; the pool is curated as one, and each sample records its model and template.
        for generator in generators:
            for template in cfg.distill.templates:
                # Plain policy samples keep the ids they always had; other sources differ by
                # model (already in the id) and by template.
                id_params = params if template == "plain" else {**params, "template": template}
                got, stats = _sample(
                    cfg,
                    generation,
                    model_path,
                    generator,
                    seeds,
                    sampling,
                    id_params,
                    tmp,
                    folder,
                    template=template,
                )
                samples += got
                runs.append({"model": generator[0], "template": template, **stats})
        if cfg.sampling.rationalize.n:
            got, stats, out["rationalize"] = _rationalize(
                cfg, generation, model_path, seeds, samples, tmp, folder
            )
            samples += got
            runs += [{"model": model_path, "template": RATIONALIZE, **stats}] if stats else []
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


def _sample(
    cfg: FlywheelConfig,
    generation: int,
    model_path: str,
    generator: tuple[str, str, EngineSpec],
    seeds: list[Seed],
    sampling: SamplingSpec,
    id_params: dict,
    tmp: Path,
    folder: Path,
    *,
    template: str,
    hint: str | None = None,
    recorded: str | None = None,
) -> tuple[list[Sample], dict]:
    """One worker run of `generator` (`_generators`) over `seeds`: its samples, ids hashing
    `id_params`, and its stats. The worker applies `template` (and `hint`); the samples record
    `recorded` (default: `template`) as theirs."""
    label, path, engine = generator
    stats = sample_seeds(
        cfg,
        path,
        seeds,
        sampling,
        tmp,
        folder,
        engine=engine,
        template=template,
        student_model=model_path,
        hint=hint,
    )
    rows = store.read_parquet(tmp / "raw.parquet")
    (tmp / "raw.parquet").unlink()
    # A served teacher's prompt whose requests all failed is an infrastructure failure:
    # counted, and kept out of the pool rather than curated as a reject.
    stats["errors"] = sum(r["finish_reason"] == "error" for r in rows)
    by_id = {s.id: s for s in seeds}
    samples = [
        Sample(
            id=Sample.make_id(generation, r["seed_id"], r["sample_index"], label, id_params),
            seed_id=r["seed_id"],
            prompt=r["train_prompt"],
            completion=r["completion"],
            answer=by_id[r["seed_id"]].answer,
            difficulty=by_id[r["seed_id"]].difficulty,
            sample_index=r["sample_index"],
            model=label,
            num_tokens=r["num_tokens"],
            finish_reason=r["finish_reason"],
            template=recorded or template,
        )
        for r in rows
        if r["finish_reason"] != "error"
    ]
    return samples, stats


def _rationalize(
    cfg: FlywheelConfig,
    generation: int,
    model_path: str,
    seeds: list[Seed],
    pool: list[Sample],
    tmp: Path,
    folder: Path,
) -> tuple[list[Sample], dict | None, dict]:
    """STaR's rationalization (`tasks.rationalize`): the seeds none of whose policy samples in
    `pool` verified, sampled again by the policy on its engine with the gold answer as a hint
    (`sampling.rationalize`). Returns the hinted samples (template `rationalize`, the plain
    prompt to train on), the worker's stats (None: no seed failed, no worker ran) and the
    counts the manifest records: failed seeds, hinted samples, how many of them verified."""
    r = cfg.sampling.rationalize
    failed = failed_seeds(seeds, [s for s in pool if s.model == model_path], cfg.domain)
    if not failed:
        return [], None, {"seeds": 0, "samples": 0, "verified": 0}
    sampling = rationalize_sampling(cfg, generation)
    # Distinct from every plain or templated id of the same index: the template and the hint
    # join the sampling params.
    id_params = {**to_json(sampling), "template": RATIONALIZE, "hint": r.hint}
    policy = (model_path, model_path, engine_spec(cfg))
    samples, stats = _sample(
        cfg,
        generation,
        model_path,
        policy,
        failed,
        sampling,
        id_params,
        tmp,
        folder,
        template="plain",
        hint=r.hint,
        recorded=RATIONALIZE,
    )
    counts = {"seeds": len(failed), "samples": len(samples)}
    return samples, stats, counts | {"verified": verified(samples, cfg.domain)}


def _generators(cfg: FlywheelConfig, model_path: str) -> list[tuple[str, str, EngineSpec]]:
    """(what samples record as their model, the worker's model path, its engine) per
    generator: the policy, then each teacher; a local teacher must be a checkpoint folder, a
    served one is its name on its endpoint."""
    d = cfg.distill
    engine = engine_spec(cfg)
    out = [(model_path, model_path, engine)] if d.include_policy else []
    for i, teacher in enumerate(d.teachers):
        if isinstance(teacher, ServedTeacher):
            out.append((teacher_label(teacher), teacher.model, served_engine(cfg, teacher)))
            continue
        if not (Path(teacher) / "config.json").is_file():
            raise FileNotFoundError(
                f"distill.teachers[{i}]: {teacher} is not a Hugging Face checkpoint folder"
            )
        out.append((teacher_label(teacher), str(teacher), engine))
    return out


def _pooled_stats(runs: list[dict]) -> dict:
    """One generation's totals over its (model, template) runs; rates from the totals."""
    total = {k: sum(r[k] for r in runs) for k in ("rows", "seconds", "tokens")}
    total.update({k: sum(r[k] for r in runs) for k in ("engine_load_s", "generate_s", "wall_s")})
    total["tokens_per_s"] = total["tokens"] / max(total["generate_s"], 1e-9)
    return total
