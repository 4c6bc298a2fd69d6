"""What every stage shares: the Prefect task kinds, the manifest check, the generate worker's
call, the seeds reader."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks import store
from tasks.config import FlywheelConfig
from tasks.generate import generate_in_subprocess
from tasks.records import Seed, from_rows
from tasks.requests import EngineSpec, PromptSpec, SamplingSpec, generate_request
from tasks.subproc import WorkerError


def _retry_on_worker_crash(task, task_run, state) -> bool:
    """Retry only when a worker process died (OOM, engine crash); a bad input or a diverged
    loss, which a fresh process would meet again, is not retried (`WorkerError.retryable`)."""
    try:
        state.result()
    except WorkerError as e:
        return e.retryable
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


def completed(folder: Path) -> dict | None:
    man = store.read_manifest(folder)
    return None if man is None else man.outputs


def sample_seeds(
    cfg: FlywheelConfig,
    model_path: str,
    seeds: list[Seed],
    sampling: SamplingSpec,
    tmp: Path,
    folder: Path,
    *,
    engine: EngineSpec | None = None,
    prompt: PromptSpec | None = None,
    template: str = "plain",
    student_model: str | None = None,
    hint: str | None = None,
    also: Sequence[tuple[SamplingSpec, Path]] = (),
) -> dict:
    """Run the generation worker over `seeds` (`tasks.requests.generate_request`: the policy's
    engine and prompt format unless `engine` or `prompt` is given; with `hint`, each seed's
    gold answer shown to the generator); it leaves `raw.parquet` in `tmp`, and each further
    pass of `also` (sampling, file) on the same engine in its file."""
    questions = tmp / "questions.parquet"
    rows = [{"seed_id": s.id, "question": s.question} for s in seeds]
    if hint is not None:  # the worker shows each seed's gold answer
        rows = [{**r, "answer": s.answer} for r, s in zip(rows, seeds, strict=True)]
    store.write_parquet(rows, questions)
    request = generate_request(
        cfg,
        model_path,
        sampling,
        questions,
        tmp / "raw.parquet",
        engine=engine,
        prompt=prompt,
        template=template,
        student_model=student_model,
        hint=hint,
        also=also,
    )
    t0 = time.perf_counter()
    stats = generate_in_subprocess(request, log_path=tmp.parent / f"{folder.name}.log")
    stats["wall_s"] = time.perf_counter() - t0  # the whole worker process, start to exit
    questions.unlink()
    return stats


def read_seeds(folder: Path) -> list[Seed]:
    return from_rows(Seed, store.read_parquet(Path(folder) / "seeds.parquet"))
