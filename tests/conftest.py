"""Shared fixtures: a tiny random Llama and its character-level tokenizer, made on the spot;
the folder every xdist worker of a session shares; one Prefect server per worker for CLI runs
and in-process flows; and how the suite is spread over workers.

The model is untrained (random weights), so it babbles: tests that need it check plumbing
(shapes, counts, finish reasons, reproducibility), never answer quality. It is small enough to
build in well under a second and shaped so vLLM's CPU attention accepts it (head size 64).

`make test` runs the suite on two xdist workers with `--dist loadgroup`. Anything costly that
several tests need is built once per session, whichever worker asks first, under a file lock in
`shared_dir` (`built_once`): a second worker waits on the lock, then reads what the first made.
A module whose tests share a module-scoped fixture (an engine, a server, a trained model) runs
whole on one worker (`xdist_group` names the groups from the test ids' paths, so no test file
declares one); the heaviest groups are queued first so the two workers end close together.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

# Prefect's test harness and ephemeral servers would try to send telemetry (no network here).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# A local run's ephemeral Prefect server starts in a few seconds on an idle core, but the suite
# runs on every core at once: its 20 s default would fail runs that are only slow to start.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
# One xdist worker per core: each (and the workers it spawns) computes on one thread. Two torch
# threads per process on a core another process keeps busy spin-wait, several times slower.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
# vLLM's CPU engine pins its compute threads to cores it picks itself and keeps one core for its
# scheduler: on 2 cores every engine binds to core 0 (its log: `core ids=[0], reserved_cpus=[1]`),
# so two engines started at once by the two workers (or two Ray replicas) share one core while
# the other idles. Unbound, each engine computes on OMP_NUM_THREADS threads wherever the OS
# finds a free core.
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
# Each vLLM CPU engine reserves its KV cache in host memory (engine.gpu_memory_utilization of
# it, 0.3 of 24 GiB by default): Ray's two replicas beside the other worker's engine would ask
# for more than the machine has. The tests' tiny models need 1 GiB.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

# Test files that share one costly session fixture: one group, so one worker builds it while the
# other goes on with the rest (instead of waiting on its lock). Every other file under
# integration/ is its own group (its module-scoped fixtures are made once); unit and e2e tests
# are spread one by one (they share only session fixtures, each cheap or built once).
SHARED_GROUPS = {
    "tests/integration/test_judge_model.py": "judge",
    "tests/integration/test_judge_server.py": "judge",
    "tests/integration/test_openai_teacher.py": "judge",
    # one Prefect server and one MLflow server for the file's two scheduling tests
    "tests/e2e/test_schedule.py": "tests/e2e/test_schedule.py",
}
# The order work is handed out, longest first (measured serially on 2 cores), so that neither
# worker is left with a long unit at the end: the judge group, then the end-to-end runs, the
# stages on work pools and the Ray backend, then the fault scenarios, then the rest of
# integration/, then unit/.
FIRST = (
    "judge",
    "tests/e2e/",
    "tests/integration/test_stage_deployments.py",  # a Prefect server, three pool workers
    "tests/integration/test_ray_backend.py",  # a Ray head, vLLM replicas started twice
    "tests/faults/",
    "tests/integration/",
    "tests/unit/",
)


def xdist_group(nodeid: str) -> str:
    """The unit of work one xdist worker runs whole: a shared group, an integration file, or
    else the test alone."""
    path = nodeid.split("::", 1)[0]
    if path in SHARED_GROUPS:
        return SHARED_GROUPS[path]
    return path if path.startswith("tests/integration/") else nodeid


def _rank(nodeid: str) -> int:
    group = xdist_group(nodeid)
    return next((i for i, p in enumerate(FIRST) if group.startswith(p)), len(FIRST))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Queue the longest work first (a stable sort: tests keep their order within a file)."""
    items.sort(key=lambda item: _rank(item.nodeid))


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadgroup` with the groups of `xdist_group`, handed out in collection order.

    xdist's own loadgroup reads `xdist_group` marks into the node ids, which pytest 9's node ids
    no longer allow (every test would be its own group); this scheduler names the groups from
    the ids' paths instead, so no test file declares one.
    """
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_group(nodeid)

    config.option.loadscopereorder = False  # keep the longest-first order of the collection
    return GroupScheduling(config, log)


def pytest_configure(config: pytest.Config) -> None:
    """Each pytest process (each xdist worker) gets its own Prefect home before Prefect is
    imported: two workers never share a local database, profile or result store."""
    config.prefect_home = tempfile.mkdtemp(prefix="flywheel-test-prefect-")
    os.environ["PREFECT_HOME"] = config.prefect_home


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(getattr(config, "prefect_home", ""), ignore_errors=True)


def build_tiny_tokenizer() -> Any:
    """The project's own character-level tokenizer (the bootstrap's): `<s>` first, tags kept."""
    from tasks.bootstrap import build_tokenizer

    return build_tokenizer()


def build_tiny_model(out_dir: Path, seed: int = 0) -> Path:
    """Save the tiny tokenizer and a random 2-layer Llama into `out_dir`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    ft = build_tiny_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(ft),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    ft.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of this session shared by all its xdist workers (each worker's basetemp is a
    `popen-gwN` folder inside the session's); without xdist, the session's basetemp."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder = root / "shared"
    folder.mkdir(exist_ok=True)
    return folder


@contextmanager
def locked(folder: Path, name: str) -> Iterator[None]:
    """Hold the session-wide lock `name` in `folder` (one holder across all workers)."""
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(folder / f".{name}.lock"):
        yield


def built_once(folder: Path, build: Callable[[Path], object]) -> Path:
    """`folder`, made by `build(folder)` by the first worker to get here; the others wait on the
    lock and find it done (a `.done` mark written last, so a crashed build is redone)."""
    done = folder.parent / f".{folder.name}.done"
    with locked(folder.parent, folder.name):
        if not done.exists():
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def tiny_model(shared_dir: Path) -> str:
    """Path of a freshly built tiny random Llama checkpoint (model + tokenizer), built once per
    session for all workers."""
    return str(built_once(shared_dir / "tiny-model", build_tiny_model))


@pytest.fixture(scope="session")
def tiny_tokenizer() -> Any:
    """The tiny model's tokenizer, without building the model."""
    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def runs_dir(tmp_path_factory: pytest.TempPathFactory, shared_dir: Path) -> Path:
    """This worker's runs folder for `flywheel` CLI runs (`tests.runs`): its own MLflow database,
    and a `models/` linked to one folder for the whole session, where the tiny config's base model
    is made once, under a file lock, before any run needs it (no two runs write one model)."""
    from tests.runs import make_tiny_base_model

    models = built_once(shared_dir / "e2e-models", make_tiny_base_model)
    runs = tmp_path_factory.mktemp("runs")
    (runs / "models").symlink_to(models)
    return runs


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The API URL of this worker's Prefect server, started by the first test that asks and kept
    for the session: what Prefect's temporary local server runs (no scheduler, no UI), with its
    SQLite database in its own folder. CLI runs (`cli_env`) and in-process flows
    (`prefect_harness`) talk to it instead of each starting a temporary server of their own,
    which costs ~10 s and ~7 CPU-s per run. The local API's own path is tested by the runs that
    take `shell_env`."""
    from flows.servers import prefect_server

    server = prefect_server(tmp_path_factory.mktemp("prefect-server"), temporary=True)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def shell_env(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The environment of a `flywheel` CLI run as a user's shell has it: this worker's own
    Prefect home, no tracking or Prefect server of the shell's, so the run starts Prefect's
    temporary local API (`flows.local_api`) as `make demo` does. Tests that start servers of
    their own build on it and set their URLs."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL")
    }
    env["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect-home"))
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture(scope="session")
def cli_env(shell_env: dict, prefect_api: str) -> dict:
    """The environment most `flywheel` CLI runs get: `shell_env` pointed at this worker's
    Prefect server (`prefect_api`)."""
    return {**shell_env, "PREFECT_API_URL": prefect_api}


@pytest.fixture
def prefect_harness(prefect_api: str) -> Iterator[str]:
    """In-process flows of this test talk to this worker's Prefect server (what
    `prefect.testing.utilities.prefect_test_harness` gives, without starting a server per use)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: prefect_api}):
        yield prefect_api
        _drain_prefect_workers()  # while the settings still name the server


def _drain_prefect_workers() -> None:
    """Send what this process's Prefect log and event workers still hold (as Prefect's test
    harness does at its end), so nothing is sent later to a server that has stopped."""
    import inspect

    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def drain() -> None:
        try:
            pending = APILogWorker.instance().drain()
            if inspect.isawaitable(pending):
                await pending
        except RuntimeError:
            pass  # the log worker never started
        pending = EventsWorker.drain_all()
        if inspect.isawaitable(pending):
            await pending

    run_coro_as_sync(drain())
