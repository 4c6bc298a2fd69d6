"""The generate stage: every generator (the policy, then each teacher) samples every seed under
every template; the pool is curated as one."""

from __future__ import annotations

from pathlib import Path

from tasks import store
from tasks.config import FlywheelConfig, ServedTeacher, teacher_label
from tasks.records import Sample, stable_hash, to_rows
from tasks.requests import EngineSpec, engine_spec, sampling_spec, served_engine, to_json
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
    d = cfg.distill
    generators = _generators(cfg, model_path)
    by_id = {s.id: s for s in seeds}
    with store.write_stage(folder, "generate") as (tmp, out):
        samples, runs = [], []
        # Every generator (the policy, then each teacher) samples every seed under every
        # template; the pool is curated as one, and each sample records its model and template.
        for generator, path, engine in generators:
            for template in d.templates:
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
