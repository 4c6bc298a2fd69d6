"""The seeds stage: a seed file, a dataset, the generator, or evolution from the last
generation's pass rates and the policy's own problems; decontaminated and deduplicated."""

from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path

from tasks import store
from tasks.config import FlywheelConfig
from tasks.domains import DOMAINS, eval_suite, make_seeds
from tasks.hygiene import SuiteIndex, decontaminate, dedup, exact_key
from tasks.records import Seed, stable_hash, to_rows
from tasks.requests import problem_prompt, problem_sampling
from tasks.seed_dataset import DatasetReport, DatasetSpec, read_seed_dataset
from tasks.seedfile import SeedFileError, SeedFileReport, looks_like_suite, read_seed_file
from tasks.seeds import evolve, model_prompts, problem_text, quotas
from tasks.stages.common import (
    completed,
    read_seeds,
    sample_seeds,
    stage_task,
)


# -- generation stages ---------------------------------------------------------------------------
def load_seed_source(
    cfg: FlywheelConfig, suite_questions: list[str]
) -> SeedFileReport | DatasetReport:
    """The user's seed file or dataset, validated row by row under the config's policy; refused
    whole when it is an eval suite. Needs no stage folder, so the flow checks it before any work."""
    s = cfg.seeds
    checks = dict(
        domain=cfg.domain, data_dirs=s.data_dirs, on_bad_row=s.on_bad_row, max_chars=s.max_chars
    )
    if s.dataset is not None:
        report = read_seed_dataset(DatasetSpec(**s.dataset.model_dump()), **checks)
        name = report.source["path"]
    else:
        report = read_seed_file(s.file, **checks)
        name = s.file
    suite_keys = {exact_key(q) for q in suite_questions}
    why = looks_like_suite(report.paths, report.seeds, suite_keys, exact_key, s.suite_file_share)
    if why:
        raise SeedFileError(
            f"{name}: refused as a seed source: {why}. Seeding from the eval suite would "
            "make every later evaluation meaningless."
        )
    return report


def check_seed_inputs(cfg: FlywheelConfig) -> None:
    """Fail before any folder is made when generation 1 would read a bad seed file or dataset."""
    first = store.stage_dir(cfg.flywheel_dir, 1, "seeds")
    if (cfg.seeds.file is None and cfg.seeds.dataset is None) or completed(first) is not None:
        return
    suite = eval_suite(DOMAINS[cfg.domain], cfg.eval.suite_size)
    load_seed_source(cfg, [x.question for x in suite])


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
    s = cfg.seeds
    asks = [Seed(f"{p.kind}-{i}", p.prompt, None) for i, p in enumerate(prompts)]
    sampling = problem_sampling(cfg, generation)
    stats = sample_seeds(cfg, model_path, asks, sampling, tmp, folder, prompt=problem_prompt(cfg))
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
    if completed(folder) is not None:
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
            if s.file is not None or s.dataset is not None:
                report = load_seed_source(cfg, suite_questions)
                seeds = report.seeds
                # A file's bad rows by file and line, a dataset's by dataset and row index.
                bad_rows = [
                    {("file" if b.unit == "line" else "dataset"): b.file, b.unit: b.line}
                    | {"reason": b.reason}
                    for b in report.bad
                ]
                extra["source"] = report.source
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
