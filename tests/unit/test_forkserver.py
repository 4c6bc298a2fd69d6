"""The worker fork server (`tasks.forkserver`): a forked worker runs as `python -m` would run it
(the caller's environment, folder and path), one server serves every worker of an environment,
and neither the server nor a worker outlives the process that started it. Real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tasks import forkserver
from tasks.subproc import WorkerError, run_worker

WORKER = """
import os
import sys
import time
from tasks.subproc import worker_main


def main(request):
    had_datasets = "datasets" in sys.modules
    if request.get("datasets"):
        import datasets  # noqa: F401
    if request.get("vllm_envs"):
        import vllm.envs  # noqa: F401  (sets a few variables when imported)
    if request.get("sleep_s"):
        print("pid", os.getpid(), flush=True)
        time.sleep(request["sleep_s"])
    print("hello from the worker")
    return {
        "env": os.environ.get("PROBE"),
        "flag": os.environ.get("FLYWHEEL_PROBE"),
        "cwd": os.getcwd(),
        "argv": sys.argv[1:],
        "preloaded": "transformers" in sys.modules,
        "had_datasets": had_datasets,
        "inductor_threads": os.environ.get("TORCHINDUCTOR_COMPILE_THREADS"),
        "pid": os.getpid(),
        "ppid": os.getppid(),
    }

if __name__ == "__main__":
    worker_main(main)
"""


@pytest.fixture
def probe(tmp_path, monkeypatch):
    (tmp_path / "probe_worker.py").write_text(WORKER)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setenv(forkserver.START_ENV, "fork")
    return "probe_worker"


def test_a_forked_worker_runs_as_python_m_would(probe, tmp_path, monkeypatch, capfd):
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.setenv("FLYWHEEL_PROBE", "set after the server started")
    log = tmp_path / "worker.log"
    out = run_worker(probe, {}, log_path=log)
    assert out["cwd"] == str(folder)
    assert out["flag"] == "set after the server started"
    assert out["argv"][0].endswith("request.json") and out["argv"][1].endswith("result.json")
    assert out["preloaded"]  # imported once, by the server
    assert out["ppid"] != os.getpid()  # forked by the server's monitor, not by us
    assert "hello from the worker" in log.read_text()
    assert "hello from the worker" in capfd.readouterr().err


def test_the_server_learns_what_workers_import(probe, monkeypatch):
    monkeypatch.setenv("PROBE", "learning")  # a server of its own: no earlier worker taught it
    first = run_worker(probe, {"datasets": True})
    assert not first["had_datasets"]  # not preloaded: this worker imported it itself
    assert run_worker(probe, {})["had_datasets"]  # the server imported it before this fork


def test_what_a_learned_import_sets_in_the_environment_reaches_later_workers(probe, monkeypatch):
    """vLLM sets variables when imported: a worker forked after the server learned it sees them
    as one that imported vLLM itself does."""
    monkeypatch.setenv("PROBE", "learned-environment")  # a server of its own
    monkeypatch.delenv("TORCHINDUCTOR_COMPILE_THREADS", raising=False)
    assert run_worker(probe, {"vllm_envs": True})["inductor_threads"] == "1"
    assert run_worker(probe, {})["inductor_threads"] == "1"


def test_one_server_per_environment(probe, monkeypatch):
    run_worker(probe, {})
    first = forkserver._SERVER
    monkeypatch.setenv("FLYWHEEL_PROBE", "x")  # read only at run time: same server
    run_worker(probe, {})
    assert forkserver._SERVER is first
    monkeypatch.setenv("PROBE", "y")  # may be read at import: a new server
    out = run_worker(probe, {})
    assert out["env"] == "y" and forkserver._SERVER is not first
    assert first.proc.poll() is not None  # the old one was retired


def test_a_killed_server_fails_the_running_worker_as_retryable_and_is_replaced(probe):
    run_worker(probe, {})
    server = forkserver._SERVER
    killer = subprocess.Popen(
        [sys.executable, "-c", f"import os, time; time.sleep(3); os.kill({server.proc.pid}, 9)"]
    )
    with pytest.raises(WorkerError, match="killed by signal 9") as e:
        run_worker(probe, {"sleep_s": 60})
    killer.wait()
    assert e.value.retryable
    assert run_worker(probe, {})["pid"]  # a new server took over
    assert forkserver._SERVER is not server


ORCHESTRATOR = """
import sys
from tasks.subproc import run_worker
run_worker("probe_worker", {"sleep_s": 120})
"""


def test_the_server_and_its_workers_die_with_the_orchestrator(probe, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    orch = subprocess.Popen(
        [sys.executable, "-c", ORCHESTRATOR], env=env, stderr=subprocess.PIPE, text=True
    )
    line = ""
    while not line.startswith("pid "):
        line = orch.stderr.readline()
        assert line or orch.poll() is None, "the orchestrator ended before its worker started"
    worker = int(line.split()[1])
    server = _parent_of(_parent_of(worker))
    orch.send_signal(signal.SIGKILL)
    orch.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (_alive(worker) or _alive(server)):
        time.sleep(0.1)
    assert not _alive(worker) and not _alive(server)


def test_the_start_mode_is_checked(monkeypatch):
    monkeypatch.setenv(forkserver.START_ENV, "spawn")
    with pytest.raises(ValueError, match="FLYWHEEL_WORKER_START='spawn'"):
        forkserver.enabled()


def _parent_of(pid: int) -> int:
    stat = open(f"/proc/{pid}/stat").read()
    return int(stat.rsplit(")", 1)[1].split()[1])


def _alive(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
