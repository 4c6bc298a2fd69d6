"""The `ray` backend on a real local Ray cluster (one head, 2 CPUs, 127.0.0.1) and the tiny
random Llama: its generate worker, on two replicas one of which is SIGKILLed after its first
batch, leaves exactly the rows the in-process vLLM worker leaves for the same seeds; a pass
that cannot start its engines ends at `engine.ray_timeout_s`. One pass covers the equality
on several replicas and the kill: each Ray pass starts its engines, the costliest part here
(`bench/bench_ray.py` checks 1 and 2 replicas against each other).

The head (`bench.bench_ray.local_head`) runs with token authentication, as `ray start` sets
it up by default; the drivers (the generate workers, each in its own process) get its token
through RAY_AUTH_MODE / RAY_AUTH_TOKEN, which Ray reads when it is imported.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from bench.bench_ray import local_head
from tasks.config import FlywheelConfig
from tasks.generate import generate_in_subprocess
from tasks.requests import generate_request, sampling_spec
from tasks.store import write_parquet
from tasks.subproc import WorkerError

pytestmark = pytest.mark.slow

# Enough decoding (96 samples of up to 96 tokens) that a replica killed after its first batch
# dies with work left, even on an idle machine.
QUESTIONS = [f"{a}+{b}" for a in (1, 7, 13) for b in (0, 2, 4, 9)]
ENGINE = {"max_model_len": 128, "gpu_memory_utilization": 0.05, "ray_batch_size": 4}
SAMPLING = {"n": 8, "max_tokens": 96}
ACTOR = "ray::MapWorker(MapBatches(vLLMEngineStageUDF))"
KILL_AFTER_S = 8.0  # a replica up this long is killed even before a batch of it has ended


@pytest.fixture(scope="module")
def ray_head():
    """A local Ray head (2 CPUs, on 127.0.0.1, no dashboard) for the module; stopped, with
    every process it started, at its end."""
    with local_head(num_cpus=2) as head:
        yield head


def config(**engine) -> FlywheelConfig:
    return FlywheelConfig(engine={**ENGINE, **engine}, sampling=SAMPLING)


def run_worker(tmp: Path, model: str, cfg: FlywheelConfig, name: str) -> list[dict]:
    """One generate worker run of the questions; the rows of the samples file it wrote."""
    questions = tmp / "questions.parquet"
    if not questions.exists():
        write_parquet(
            [{"seed_id": f"s{i}", "question": q} for i, q in enumerate(QUESTIONS)], questions
        )
    out = tmp / name / "raw.parquet"
    generate_in_subprocess(
        generate_request(cfg, model, sampling_spec(cfg, 0), questions, out), tmp / f"{name}.log"
    )
    return pq.read_table(out).to_pylist()


@pytest.fixture(scope="module")
def vllm_rows(tiny_model, tmp_path_factory):
    """What the in-process vLLM worker writes for the questions."""
    return run_worker(tmp_path_factory.mktemp("vllm"), tiny_model, config(backend="vllm"), "vllm")


def _actors() -> list[int]:
    """The pids of this machine's Ray Data vLLM engine actors."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "cmdline").read_bytes().startswith(ACTOR.encode()):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def _batches_done(temp: Path, pid: str = "*") -> int:
    """How many batches the engine actor `pid` (every one: "*") has finished, from the logs."""
    done = 0
    for log in temp.glob(f"session_*/logs/worker-*-{pid}.*"):
        try:  # Ray removes or rotates a log between the listing and the read
            done += log.read_text(errors="replace").count("[vLLM] Elapsed time for batch")
        except OSError:
            continue
    return done


def test_ray_worker_with_a_replica_killed_mid_run_writes_the_vllm_workers_rows(
    ray_head, tiny_model, vllm_rows, tmp_path
):
    """The generate worker on 2 replicas, batches of 2 samples; once a replica has finished a
    batch it is SIGKILLed (its log is polled every 50 ms), or, where its batches would all end
    together (an idle machine decodes them in one engine step), once it has been up for
    `KILL_AFTER_S`. Ray restarts it and samples its unfinished batches again from the same
    seeds: the worker's rows equal the in-process engine's."""
    cfg = config(backend="ray", ray_address=ray_head["address"], replicas=2, ray_batch_size=2)
    killed: list[tuple[int, int]] = []  # (pid, batches all replicas had finished by then)
    done = threading.Event()

    def kill_after_first_batch() -> None:
        seen: dict[int, float] = {}  # actor pid -> when the killer first saw it
        while not done.is_set() and not killed:
            finished = {pid: _batches_done(ray_head["temp"], str(pid)) for pid in _actors()}
            now = time.monotonic()
            for pid in finished:
                seen.setdefault(pid, now)
            victim = next((pid for pid, n in finished.items() if n >= 1), None)
            if victim is None:
                victim = next((p for p in finished if now - seen[p] >= KILL_AFTER_S), None)
            if victim is not None:
                os.kill(victim, signal.SIGKILL)
                killed.append((victim, sum(finished.values())))
            time.sleep(0.05)

    killer = threading.Thread(target=kill_after_first_batch, daemon=True)
    killer.start()
    try:
        rows = run_worker(tmp_path, tiny_model, cfg, "ray")
    finally:
        done.set()
        killer.join()
    assert killed, "no engine replica finished a batch while the worker ran"
    # Killed mid-run: batches were finished after the kill (its own, sampled again, among them).
    assert killed[0][1] < _batches_done(ray_head["temp"])
    assert len(rows) == len(QUESTIONS) * SAMPLING["n"]
    assert rows == vllm_rows
    # The seeds make both ends of a sample: an EOS and the token budget.
    assert {r["finish_reason"] for r in rows} == {"stop", "length"}
    assert len({r["completion"] for r in rows}) > len(QUESTIONS)  # the n samples differ


def test_a_pass_whose_engines_cannot_start_ends_at_its_timeout(ray_head, tiny_model, tmp_path):
    """A GPU per rank on a CPU-only cluster: Ray would wait forever; the generate worker ends
    at `engine.ray_timeout_s` with an error naming it (in its own process, as in a run: a Ray
    driver takes the head's token from its environment when it imports Ray)."""
    cfg = config(
        backend="ray", ray_address=ray_head["address"], ray_num_gpus=1.0, ray_timeout_s=15.0
    )
    start = time.monotonic()
    with pytest.raises(WorkerError, match="engine.ray_timeout_s"):
        run_worker(tmp_path, tiny_model, cfg, "unplaceable")
    assert time.monotonic() - start < 180
