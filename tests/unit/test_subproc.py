"""`run_worker` adds the worker process's own wall and CPU seconds to its result; a worker that
fails, or returns something other than a dict, is a WorkerError. Real child processes, tiny,
forked from the fork server and started as fresh interpreters alike."""

from __future__ import annotations

import pytest

from tasks.subproc import WorkerError, run_worker

WORKER = """
import os
import time
from tasks.subproc import TransientError, worker_main


def burn(seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def orphan(seconds):  # a grandchild whose parent exits at once, as vLLM's inner worker can
    if os.fork() == 0:
        if os.fork() == 0:
            burn(seconds)
        os._exit(0)

def noise_at_exit(chars):
    import atexit
    if chars:
        atexit.register(lambda: print("x" * chars, flush=True))


def main(request):
    noise_at_exit(request.get("noise", 0))
    if "raise" in request:
        raise {"error": ValueError, "transient": TransientError}[request["raise"]]("bad")
    if request.get("die"):
        os.kill(os.getpid(), 9)
    orphan(request.get("orphan_s", 0))
    burn(request["burn_s"])  # CPU, not sleep: only this counts as cpu_s
    time.sleep(request["sleep_s"])
    return request.get("result", {"ok": True, "cpu_s": -1.0})

if __name__ == "__main__":
    worker_main(main)
"""


@pytest.fixture(params=["fork", "exec"])
def worker(request, tmp_path, monkeypatch):
    """The burn worker's module name, started either way (`FLYWHEEL_WORKER_START`)."""
    monkeypatch.setenv("FLYWHEEL_WORKER_START", request.param)
    (tmp_path / "burn_worker.py").write_text(WORKER)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    return "burn_worker"


def test_cpu_seconds_count_work_not_waiting(worker):
    out = run_worker(worker, {"burn_s": 0.6, "sleep_s": 0.6})
    assert out["ok"] is True
    assert 0.6 <= out["cpu_s"] < 0.6 + 1.5  # the burn, plus interpreter start-up
    assert out["wall_s"] >= 1.2  # the sleep is wall time only
    assert out["cpu_s"] < out["wall_s"]


def test_a_result_that_is_not_a_dict_is_a_worker_error(worker):
    with pytest.raises(WorkerError, match="returned list, not a dict"):
        run_worker(worker, {"burn_s": 0, "sleep_s": 0, "result": [1, 2]})


def test_an_orphaned_descendant_is_counted(worker):
    out = run_worker(worker, {"burn_s": 0, "sleep_s": 0, "orphan_s": 1.0})
    assert out["cpu_s"] >= 1.0


@pytest.mark.parametrize(
    ("request_", "status", "retryable"),
    [
        ({"raise": "error"}, "status 1", False),
        ({"raise": "transient"}, "status 75", True),
        ({"die": True}, "killed by signal 9", True),
    ],
    ids=["error", "transient", "killed"],
)
def test_a_failure_says_whether_a_fresh_process_could_succeed(worker, request_, status, retryable):
    with pytest.raises(WorkerError, match=status) as e:
        run_worker(worker, {"burn_s": 0, "sleep_s": 0, **request_})
    assert e.value.retryable is retryable


def test_the_error_leads_the_message_whatever_was_printed_after_it(worker):
    """A worker whose error is followed by more output than the kept tail (a library's threads
    failing while the process shuts down) still names its error first."""
    with pytest.raises(WorkerError) as e:
        run_worker(worker, {"burn_s": 0, "sleep_s": 0, "raise": "error", "noise": 20_000})
    head = "burn_worker exited with status 1: ValueError: bad; last output:"
    assert str(e.value).startswith(head)
