"""Two runs of the same flywheel never overlap; a killed holder frees the lock at once."""

import multiprocessing as mp
import os
import signal
import threading
import time

from flows.run_lock import one_run_at_a_time


def test_second_run_waits_for_the_first_and_other_flywheels_do_not(tmp_path):
    events: list[str] = []
    holding = threading.Event()

    def first():
        with one_run_at_a_time(tmp_path / "fw"):
            events.append("first in")
            holding.set()
            time.sleep(0.5)
            events.append("first out")

    t = threading.Thread(target=first)
    t.start()
    holding.wait(10)
    with one_run_at_a_time(tmp_path / "other"):
        events.append("other in")  # a different flywheel runs alongside
    with one_run_at_a_time(tmp_path / "fw"):
        events.append("second in")
    t.join()
    assert events == ["first in", "other in", "first out", "second in"]


def _hold_forever(folder, ready):
    with one_run_at_a_time(folder):
        ready.set()
        time.sleep(600)


def test_a_killed_run_frees_the_lock(tmp_path):
    ctx = mp.get_context("fork")
    ready = ctx.Event()
    p = ctx.Process(target=_hold_forever, args=(tmp_path / "fw", ready))
    p.start()
    assert ready.wait(10)
    os.kill(p.pid, signal.SIGKILL)
    p.join()
    t0 = time.monotonic()
    with one_run_at_a_time(tmp_path / "fw"):
        pass
    assert time.monotonic() - t0 < 5
