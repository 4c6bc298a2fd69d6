"""Opt-in pytest plugin: the CPU seconds each test costs, to find where the suite's time goes.

    python -m pytest -n 2 --dist loadgroup -p tests.cpu_profile      # then read runs/cpu-profile/

Per test (setup + call + teardown) it appends one JSON line to `<FLYWHEEL_CPU_PROFILE or
runs/cpu-profile>/<xdist worker>.jsonl`: the CPU of the pytest process itself (`self`), of the
processes it started and reaped meanwhile (`children`: workers, servers, CLI runs) and the wall
time. A server reaped at a module's teardown counts in that module's last test.
`bench/results/*-make-test-cpu-profile.txt` is one such profile, summed.
"""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path

import pytest


def _cpu() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    own, kids, wall = *_cpu(), time.time()
    yield
    own2, kids2 = _cpu()
    out = Path(os.environ.get("FLYWHEEL_CPU_PROFILE") or "runs/cpu-profile")
    out.mkdir(parents=True, exist_ok=True)
    row = {"id": item.nodeid, "self": own2 - own, "children": kids2 - kids}
    row["start"], row["wall"] = wall, time.time() - wall
    with open(out / f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
