"""Fault injection: named points in the stages where a test can make the run fail on purpose.

A stage calls `fault("train.step")` (or any other point name) where a real run could die, run
out of disk or produce garbage. Nothing happens unless the environment variable
`FLYWHEEL_FAULTS` names that point:

    FLYWHEEL_FAULTS="train.step@3=sigkill,store.write=enospc"

Each entry is `point[@hit]=action`: the action fires on the `hit`-th time this process reaches
the point (default 1), once. Actions:

- `sigkill`: the process kills itself with SIGKILL (no cleanup, no `finally`).
- `exit`: `os._exit(70)`, a crash that skips cleanup but leaves an exit status.
- `enospc`: raises `OSError(ENOSPC)`, as a full disk would.
- `raise`: raises `FaultInjected` (an ordinary error).
- any other word: returned to the caller, which acts on it (`nan` in training makes the loss
  NaN; `garbage` in the judge makes the reply unreadable).

Pure: standard library only, safe to import from any module. Workers inherit the variable
from the run that starts them; a test that resumes after a fault unsets it.

Hits count per process, so a worker started again (a stage's retry) would meet the same fault
again. With `FLYWHEEL_FAULTS_ONCE=<folder>` a point fires once across every process sharing
that folder (a marker file per point, created before the action): a crash that a retry in a
fresh process survives.
"""

from __future__ import annotations

import errno
import os
import signal
from collections import Counter

ENV = "FLYWHEEL_FAULTS"
ONCE_ENV = "FLYWHEEL_FAULTS_ONCE"
_hits: Counter[str] = Counter()


class FaultInjected(RuntimeError):
    """An error raised on purpose by `FLYWHEEL_FAULTS`."""


def parse(spec: str) -> dict[str, tuple[int, str]]:
    """`"a@2=sigkill,b=enospc"` -> `{"a": (2, "sigkill"), "b": (1, "enospc")}`."""
    out: dict[str, tuple[int, str]] = {}
    for entry in filter(None, (e.strip() for e in spec.split(","))):
        where, sep, action = entry.partition("=")
        point, _, hit = where.partition("@")
        if not sep or not point or not action:
            raise ValueError(f"{ENV}: {entry!r} is not point[@hit]=action")
        if hit and not (hit.isdigit() and int(hit) >= 1):
            raise ValueError(f"{ENV}: {entry!r}: the hit after @ must be a whole number >= 1")
        out[point.strip()] = (int(hit or 1), action.strip())
    return out


def fault(point: str) -> str | None:
    """Count a pass through `point`; fire its action if `FLYWHEEL_FAULTS` asks for it now.

    Returns None (nothing to do), or the action word for the caller to act on."""
    spec = os.environ.get(ENV)
    if not spec:
        return None
    wanted = parse(spec).get(point)
    if wanted is None:
        return None
    _hits[point] += 1
    hit, action = wanted
    if _hits[point] != hit or not _first_anywhere(point):
        return None
    if action == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "exit":
        os._exit(70)
    if action == "enospc":
        raise OSError(errno.ENOSPC, f"No space left on device (injected at {point})")
    if action == "raise":
        raise FaultInjected(f"fault injected at {point}")
    return action


def _first_anywhere(point: str) -> bool:
    """False when `FLYWHEEL_FAULTS_ONCE` names a folder where `point` already fired."""
    folder = os.environ.get(ONCE_ENV)
    if not folder:
        return True
    os.makedirs(folder, exist_ok=True)
    try:
        os.close(os.open(os.path.join(folder, point), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True
