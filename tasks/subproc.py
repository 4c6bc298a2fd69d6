"""Run heavy work (an engine, a trainer) in its own Python process.

The orchestrator passes a JSON request and gets a JSON result back through files; the child's
memory is returned to the OS when it exits, and a crash (OOM, segfault, CUDA error) is contained
and reported with the tail of its log instead of taking the flow down with it.

A worker module defines `main(request: dict) -> dict` and ends with
`if __name__ == "__main__": worker_main(main)`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


class WorkerError(RuntimeError):
    """A worker process failed; the message carries its exit status and log tail."""


def run_worker(module: str, request: dict[str, Any], log_path: Path | None = None) -> dict:
    """Run `python -m module` on `request`; return its result dict.

    The child's stdout/stderr stream through to ours (progress bars stay visible) and are kept
    in `log_path` too when given.
    """
    with tempfile.TemporaryDirectory(prefix="flywheel-worker-") as tmp:
        req, res = Path(tmp) / "request.json", Path(tmp) / "result.json"
        req.write_text(json.dumps(request, default=str))
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        cmd = [sys.executable, "-m", module, str(req), str(res)]
        tail: list[str] = []
        with subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True, bufsize=1
        ) as proc:
            log = open(log_path, "a") if log_path else None
            try:
                assert proc.stdout is not None
                for line in proc.stdout:
                    sys.stderr.write(line)
                    if log:
                        log.write(line)
                    tail.append(line)
                    del tail[:-40]
            finally:
                if log:
                    log.close()
            code = proc.wait()
        if code != 0 or not res.is_file():
            raise WorkerError(
                f"{module} exited with status {code}; last lines:\n" + "".join(tail[-20:])
            )
        return json.loads(res.read_text())


def worker_main(fn: Callable[[dict], dict]) -> None:
    """Entry point of a worker module: read the request, run, write the result."""
    req_path, res_path = Path(sys.argv[1]), Path(sys.argv[2])
    result = fn(json.loads(req_path.read_text()))
    tmp = res_path.with_suffix(".part")
    tmp.write_text(json.dumps(result, default=str))
    os.replace(tmp, res_path)
