"""Run heavy work (an engine, a trainer) in its own Python process.

The orchestrator passes a JSON request and gets a JSON result back through files; the child's
memory is returned to the OS when it exits, and a crash (OOM, segfault, CUDA error) is contained
and reported with the tail of its log instead of taking the flow down with it.

A worker module defines `main(request: dict) -> dict` and ends with
`if __name__ == "__main__": worker_main(main)`. `run_worker` adds the process's own cost to the
dict it returns: `wall_s` (start to exit) and `cpu_s` (user + system CPU seconds of the worker and
of every process it reaped, e.g. vLLM's engine core). On a shared, loaded machine wall time
measures the neighbours too; CPU seconds measure the work.

A failed worker says whether a fresh process could succeed (`WorkerError.retryable`): one that
died (a signal: SIGKILL, the OOM killer, a segfault; or an exit that skipped Python's error
handling) or raised a `TransientError` (its engine process died) may be retried; one that
raised any other exception (a bad request, a diverged loss) would fail the same way again.

A worker may also run as several processes under a launcher (`run_worker(..., launcher=...)`,
e.g. `accelerate launch`, whose torchrun starts one process per rank with `RANK` set): every
rank reads the same request and runs `main`, only rank 0 writes the result, and each rank dies
with the launcher (torchrun starts ranks in sessions of their own, out of reach of a signal to
the launcher's group; a killed launcher would otherwise leave them training).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tasks import forkserver

# (module, wall seconds) of every worker this process ran, in order: benchmarks read it to
# split a flow's wall time into work done in workers and the orchestration around it.
WORKER_WALL: list[tuple[str, float]] = []


LAUNCHED_ENV = "FLYWHEEL_LAUNCHED"
"""Set for a worker started under a launcher: only then does its `RANK` (which a cluster may set
for other reasons) make it one rank of several."""

TRANSIENT_EXIT = 75  # EX_TEMPFAIL: the worker raised a TransientError
ERROR_EXIT = 1  # the worker raised any other exception (Python's own status for one)


class TransientError(RuntimeError):
    """Raised in a worker for a failure a fresh process may not repeat (its engine process
    died under it); the worker exits with `TRANSIENT_EXIT`."""


class WorkerError(RuntimeError):
    """A worker process failed; the message carries its exit status and log tail, `code` the
    status (negative: the signal that killed it)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code

    @property
    def retryable(self) -> bool:
        """Whether a fresh process could succeed: the worker died or failed transiently, as
        opposed to raising an error it would raise again."""
        return self.code is not None and self.code not in (0, ERROR_EXIT)


def _echo(chunk: bytes) -> None:
    buf = getattr(sys.stderr, "buffer", None)
    if buf is not None:
        buf.write(chunk)
    else:
        sys.stderr.write(chunk.decode(errors="replace"))
    sys.stderr.flush()


def run_worker(
    module: str,
    request: dict[str, Any],
    log_path: Path | None = None,
    launcher: list[str] | None = None,
) -> dict:
    """Run `python -m module` on `request`; return its result dict with the worker's `wall_s`
    and `cpu_s` added (they replace any the worker set itself).

    `launcher` replaces `python -m` in front of the module (`accelerate launch ... -m`); its
    `cpu_s` counts the ranks too (the launcher reaps them). The child's stdout/stderr stream
    through to ours (progress bars stay visible) and are kept in `log_path` too when given.
    Every existing path the request names is checked first (`tasks.store.verify_inputs`): a
    completed stage's file changed since it landed, or a model with only pickled weights, stops
    here, before any process starts.
    """
    from tasks.store import verify_inputs

    verify_inputs(request)
    with tempfile.TemporaryDirectory(prefix="flywheel-worker-") as tmp:
        req, res = Path(tmp) / "request.json", Path(tmp) / "result.json"
        req.write_text(json.dumps(request, default=str))
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop(LAUNCHED_ENV, None)
        if launcher:
            env[LAUNCHED_ENV] = "1"
        if sys.stderr.isatty():
            # The child writes into a pipe; tell rich and tqdm to draw live bars anyway.
            env.update(FORCE_COLOR="1", TTY_COMPATIBLE="1", TTY_INTERACTIVE="1")
        started = time.perf_counter()
        tail, cpu_s = b"", 0.0
        log = open(log_path, "ab") if log_path else None
        output, wait = _start(module, [str(req), str(res)], env, launcher)
        code: int | None = None
        try:
            # Relay raw chunks, not lines: progress bars redraw with \r, not newlines.
            while chunk := os.read(output, 65536):
                _echo(chunk)
                if log:
                    log.write(chunk)
                tail = (tail + chunk)[-8000:]
            code, cpu_s = wait()
        finally:
            os.close(output)  # a worker still writing now fails on a closed pipe
            if code is None:
                wait()
            if log:
                log.close()
            wall_s = time.perf_counter() - started
            WORKER_WALL.append((module, wall_s))
        if code != 0 or not res.is_file():
            how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
            error = res.with_suffix(".error")
            said = f": {error.read_text(errors='replace').strip()}" if error.is_file() else ""
            raise WorkerError(
                f"{module} {how}{said}; last output:\n" + tail.decode(errors="replace")[-3000:],
                code,
            )
        result = json.loads(res.read_text())
        if not isinstance(result, dict):
            raise WorkerError(f"{module} returned {type(result).__name__}, not a dict")
        return {**result, "wall_s": wall_s, "cpu_s": cpu_s}


def _start(
    module: str, argv: list[str], env: dict[str, str], launcher: list[str] | None
) -> tuple[int, Callable[[], tuple[int, float]]]:
    """Start the worker: forked from this process's fork server (`tasks.forkserver`), or as a
    fresh interpreter under `launcher` or when forking is off. Returns the read end of its
    combined output (the caller closes it) and the call that waits for its exit status and CPU
    seconds."""
    if not launcher and forkserver.enabled():
        worker = forkserver.server(env).start(module, argv, env)
        return worker.output, worker.wait
    proc = subprocess.Popen(
        [*(launcher or [sys.executable, "-m"]), module, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        preexec_fn=forkserver.die_with_parent,
    )
    assert proc.stdout is not None
    output = os.dup(proc.stdout.fileno())
    proc.stdout.close()

    def wait() -> tuple[int, float]:
        if proc.returncode is not None:
            return proc.returncode, 0.0
        try:
            return _reap(proc)
        except BaseException:
            proc.kill()
            raise

    return output, wait


def _reap(proc: subprocess.Popen) -> tuple[int, float]:
    """Wait for the worker; its exit status and CPU seconds. `os.wait4` gives this one child's
    usage (with the descendants it reaped), where RUSAGE_CHILDREN before and after would also
    count any other worker a concurrent thread reaps meanwhile."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait
    return proc.returncode, usage.ru_utime + usage.ru_stime


PR_SET_CHILD_SUBREAPER = 36
REAP_GRACE_S = 5.0
"""How long a finished worker waits for its descendants to exit, so their CPU time counts."""


def _adopt_orphans() -> None:
    """Linux: make this worker the reaper of its orphaned descendants. vLLM's engine core starts
    its own worker process and may exit before reaping it; that process then went to init and
    its CPU seconds (measured: 16 of 38) were missing from the worker's `cpu_s`."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1)
    except OSError:
        pass


def _children() -> list[int]:
    """This process's live children (Linux; none known elsewhere)."""
    pids: list[int] = []
    for f in Path(f"/proc/{os.getpid()}/task").glob("*/children"):
        try:
            pids += [int(x) for x in f.read_text().split()]
        except OSError:
            pass
    return pids


def _waits_for_us(pid: int) -> bool:
    """A child that exits only after this process does: multiprocessing's resource tracker."""
    try:
        return b"multiprocessing.resource_tracker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True


def _reap_descendants(grace_s: float = REAP_GRACE_S) -> None:
    """Reap every child (adopted orphans included) that exits within `grace_s`, so the worker's
    exit status carries their CPU time. Waiting ends as soon as only children that outlive us
    by design are left (the resource tracker); one still running at the deadline is left."""
    deadline = time.monotonic() + grace_s
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:  # no children left
            return
        if pid == 0:
            if time.monotonic() > deadline or all(_waits_for_us(c) for c in _children()):
                return
            time.sleep(0.05)


def _die_with_launcher() -> None:
    """A rank: SIGKILL this process when its launcher dies, and at once if it already has (its
    parent changed before the death signal was set)."""
    launcher = os.getppid()
    forkserver.die_with_parent()
    if os.getppid() != launcher:
        os.kill(os.getpid(), signal.SIGKILL)


def _tell_launcher(error: Exception) -> None:
    """A rank's error into torchrun's error file for it (`TORCHELASTIC_ERROR_FILE`): the
    launcher's failure summary, the last lines of the log, then shows the failed ranks' errors
    and tracebacks (without it: a link to the docs), the first failure's last of all."""
    from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

    ErrorHandler().record_exception(error)


def worker_main(fn: Callable[[dict], dict]) -> None:
    """Entry point of a worker module: read the request, run, write the result, reap. Started
    as one rank of several (`RANK` set by the launcher), it dies with the launcher and writes
    the result only from rank 0."""
    rank = os.environ.get("RANK") if os.environ.get(LAUNCHED_ENV) else None
    if rank is not None:
        _die_with_launcher()
    _adopt_orphans()
    req_path, res_path = Path(sys.argv[1]), Path(sys.argv[2])
    try:
        result = fn(json.loads(req_path.read_text()))
    except Exception as e:
        traceback.print_exc()
        sys.stderr.flush()
        # The error itself, for the caller's message: whatever the process prints after it
        # (a library's threads failing as it shuts down) can push it out of the log's tail.
        res_path.with_suffix(".error").write_text("".join(traceback.format_exception_only(e)))
        if rank is not None:
            _tell_launcher(e)
        _reap_descendants()
        sys.exit(TRANSIENT_EXIT if isinstance(e, TransientError) else ERROR_EXIT)
    if rank in (None, "0"):
        tmp = res_path.with_suffix(".part")
        tmp.write_text(json.dumps(result, default=str))
        os.replace(tmp, res_path)
    _reap_descendants()
