"""Start worker processes by forking a server that has already imported the heavy libraries.

A worker started as `python -m tasks.generate` spends about 7 CPU seconds importing torch,
transformers and TRL before it does any work; a tiny generate, train or eval step then takes a
fraction of a second. A flywheel generation starts four or five workers, so on a small model
most of its CPU went into imports. The fork server imports torch and transformers once
(`PRELOAD`) and forks a fresh worker for each request: each worker is still its own process (its
memory goes back to the OS when it exits, a crash stays contained), it starts in milliseconds,
and it runs exactly what `python -m module request.json result.json` would run. Each worker
tells the server, as it exits, which modules of the heavy libraries it imported (`LEARNABLE`:
TRL, vLLM, ...); the server imports them before its next fork, so only the first trainer or the
first vLLM engine of a run pays for them, and a process that starts a single worker pays no more
than a fresh interpreter would.

One server serves one orchestrator process and one environment: `run_worker` starts it on first
use with the orchestrator's environment, and starts another when the environment changes (the
libraries it imported read some variables once, at import). Variables only this project reads at
run time (`FLYWHEEL_*`), per-test ones (`PYTEST_*`) and `PYTHONPATH` (applied in each worker) do
not count as a change: each worker gets the caller's whole environment at fork time.

The server dies with the orchestrator (its stdin is a pipe only the orchestrator holds: at EOF it
exits), and every worker dies with the server. Per request the server forks a monitor, which
forks the worker, waits for it and sends back its exit status and CPU seconds; the server itself
only accepts requests, forks and reaps its monitors, single-threaded.

`FLYWHEEL_WORKER_START=exec` turns it off (every worker a fresh interpreter, as before).
"""

from __future__ import annotations

import atexit
import ctypes
import importlib
import io
import json
import os
import runpy
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import traceback
from collections.abc import Mapping
from pathlib import Path

START_ENV = "FLYWHEEL_WORKER_START"
"""`fork` (the default): workers are forked from a fork server; `exec`: each is a fresh
interpreter."""

# What nearly every worker imports before its work starts (a model, a tokenizer), imported when
# the server starts. The rest is learned (`LEARNABLE`).
PRELOAD = (
    "torch",
    "transformers",
    "transformers.models.auto.modeling_auto",
    "transformers.models.auto.tokenization_auto",
)
# Packages whose modules a worker reports having imported when it exits; the server imports them
# before its next fork, so only the first worker of a kind (the first trainer, the first vLLM
# engine) pays for them. Only these: their imports start no thread a fork would lose.
LEARNABLE = frozenset(
    {"torch", "transformers", "trl", "vllm", "accelerate", "peft", "datasets", "safetensors"}
)
# Environment variables that do not make a new server: read only at run time by this project's
# own modules (never imported by the server), or set by the test runner per test.
VOLATILE_PREFIXES = ("FLYWHEEL_", "PYTEST_")
# PYTHONPATH is applied in each worker as a fresh interpreter would apply it.
VOLATILE = frozenset(
    {"PYTHONUNBUFFERED", "PYTHONPATH", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"}
)
PR_SET_PDEATHSIG = 1


def enabled() -> bool:
    """Whether workers are forked (`FLYWHEEL_WORKER_START`, `fork` unless set to `exec`)."""
    mode = os.environ.get(START_ENV, "fork")
    if mode not in ("fork", "exec"):
        raise ValueError(f"{START_ENV}={mode!r}: expected 'fork' or 'exec'")
    return mode == "fork"


def _env_key(env: Mapping[str, str]) -> frozenset:
    return frozenset(
        (k, v) for k, v in env.items() if k not in VOLATILE and not k.startswith(VOLATILE_PREFIXES)
    )


def die_with_parent() -> None:
    """Linux: SIGKILL this process when its parent dies (so a killed run leaves no orphan engine
    holding memory while the resumed run starts); set in the child, after the fork."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


class Worker:
    """A forked worker as its caller sees it: `pid`, `output` (the read end of its combined
    stdout and stderr, the caller's to close) and `wait()`, which gives (exit code as Popen's
    `returncode` would be, CPU seconds of the worker and every descendant it reaped)."""

    def __init__(self, conn: socket.socket, pid: int, output: int, server: ForkServer) -> None:
        self.conn, self.pid, self.output, self._server = conn, pid, output, server
        self._replies = conn.makefile("rb")
        self._exit: tuple[int, float] | None = None

    def wait(self) -> tuple[int, float]:
        """Block until the worker exits; its exit code and CPU seconds (again on a second call).
        Interrupted, it stops listening: the worker runs on, in the caller's process group."""
        if self._exit is not None:
            return self._exit
        line = b""
        try:
            line = self._replies.readline()
        finally:
            self._replies.close()
            self.conn.close()
            self._server.release()
            self._exit = (-signal.SIGKILL, 0.0)  # unless it says otherwise: the monitor died
        if line:
            reply = json.loads(line)
            self._exit = (os.waitstatus_to_exitcode(reply["status"]), reply["cpu_s"])
        return self._exit


class ForkServer:
    """The orchestrator's handle on one server process (one environment)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.key = _env_key(env)
        self.folder = Path(tempfile.mkdtemp(prefix="flywheel-forkserver-"))
        self.socket_path = str(self.folder / "socket")
        (self.folder / "learned").mkdir()
        self._log = open(self.folder / "server.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tasks.forkserver", str(self.folder)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
        )
        assert self.proc.stdout is not None
        ready = self.proc.stdout.readline()
        if ready != b"ready\n":
            self.proc.wait()
            raise RuntimeError(
                f"the worker fork server did not start (status {self.proc.returncode}): "
                + (self.folder / "server.log").read_text(errors="replace")[-2000:]
            )
        self._lock = threading.Lock()
        self._active = 0
        self._retired = False

    def start(self, module: str, argv: list[str], env: dict[str, str]) -> Worker:
        """Fork `python -m module *argv` with environment `env` in the caller's folder."""
        read_end, write_end = os.pipe()
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(self.socket_path)
            header = json.dumps(
                {"module": module, "argv": argv, "env": env, "cwd": os.getcwd()}
            ).encode()
            socket.send_fds(conn, [len(header).to_bytes(8, "big") + header], [write_end])
        except BaseException:
            conn.close()
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        with self._lock:
            self._active += 1
        worker = Worker(conn, 0, read_end, self)
        line = worker._replies.readline()
        if not line:
            worker.wait()
            os.close(read_end)
            raise RuntimeError("the worker fork server closed the connection before forking")
        worker.pid = json.loads(line)["pid"]
        return worker

    def release(self) -> None:
        with self._lock:
            self._active -= 1
            done = self._retired and self._active == 0
        if done:
            self.close()

    def retire(self) -> None:
        """Stop serving: close now if no worker is running, else when the last one ends."""
        with self._lock:
            self._retired = True
            done = self._active == 0
        if done:
            self.close()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()  # EOF: the server exits
        self.proc.wait()
        self._log.close()
        shutil.rmtree(self.folder, ignore_errors=True)


_LOCK = threading.Lock()
_SERVER: ForkServer | None = None


def server(env: dict[str, str]) -> ForkServer:
    """This process's fork server for `env`, started (or replaced) if need be."""
    global _SERVER
    with _LOCK:
        if _SERVER is not None and (_SERVER.key != _env_key(env) or not _SERVER.alive()):
            _SERVER.retire()
            _SERVER = None
        if _SERVER is None:
            _SERVER = ForkServer(env)
            atexit.register(_SERVER.retire)
        return _SERVER


def _send_json(conn: socket.socket, obj: dict) -> None:
    conn.sendall(json.dumps(obj).encode() + b"\n")


def _receive(conn: socket.socket) -> tuple[dict, int]:
    """A request's header and the descriptor its worker writes its output to."""
    msg, fds, _, _ = socket.recv_fds(conn, 1 << 16, 1)
    size = int.from_bytes(msg[:8], "big")
    body = msg[8:]
    while len(body) < size:
        chunk = conn.recv(size - len(body))
        if not chunk:
            raise EOFError("request cut short")
        body += chunk
    return json.loads(body), fds[0]


def _become_worker(request: dict, output: int) -> None:
    """In the forked worker: become `python -m module argv...` and run it; never returns."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # the server ignores it
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(output, 1)
    os.dup2(output, 2)
    os.close(output)
    # Unbuffered, as PYTHONUNBUFFERED=1 makes a fresh interpreter's.
    sys.stdout = io.TextIOWrapper(open(1, "wb", buffering=0, closefd=False), write_through=True)
    sys.stderr = io.TextIOWrapper(
        open(2, "wb", buffering=0, closefd=False), write_through=True, errors="backslashreplace"
    )
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    # `python -m` puts the working folder first on the path; PYTHONPATH was read at start-up.
    sys.path[0] = request["cwd"]
    for entry in reversed(os.environ.get("PYTHONPATH", "").split(os.pathsep)):
        if entry and entry not in sys.path:
            sys.path.insert(1, entry)
    if "numpy" in sys.modules:  # each fresh interpreter seeds its own; forks would share one
        sys.modules["numpy"].random.seed()
    sys.argv = [request["module"], *request["argv"]]
    code: int = 0
    try:
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    try:  # what interpreter shutdown would do: wait for threads, then exit handlers
        threading._shutdown()  # type: ignore[attr-defined]
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        _report_imports(Path(request["learned"]))
    finally:
        os._exit(code)


def _report_imports(folder: Path) -> None:
    """Write the `LEARNABLE` modules this worker imported into the server's `folder`."""
    names = sorted(m for m in list(sys.modules) if m.partition(".")[0] in LEARNABLE)
    tmp = folder / f".{os.getpid()}.tmp"
    tmp.write_text(json.dumps(names))
    tmp.rename(folder / f"{os.getpid()}.json")


def _learn(folder: Path) -> None:
    """Import what finished workers reported (`_report_imports`) and forget their reports. A
    module that fails to import here is left to the workers (it fails the same way there)."""
    for report in folder.glob("*.json"):
        try:
            names = json.loads(report.read_text())
        except (OSError, ValueError):
            names = []
        report.unlink(missing_ok=True)
        for name in names:
            if name not in sys.modules and name.partition(".")[0] in LEARNABLE:
                try:
                    importlib.import_module(name)
                except Exception:  # noqa: BLE001 - any import error: the worker will see it
                    pass


def _monitor(conn: socket.socket, request: dict, output: int) -> None:
    """In the forked monitor: fork the worker, report its pid, then its exit; never returns."""
    die_with_parent()
    try:
        pid = os.fork()
        if pid == 0:
            conn.close()
            _become_worker(request, output)
        os.close(output)
        _send_json(conn, {"pid": pid})
        _, status, usage = os.wait4(pid, 0)
        _send_json(conn, {"status": status, "cpu_s": usage.ru_utime + usage.ru_stime})
    finally:
        os._exit(0)


def _reap_monitors() -> None:
    """Reap every monitor that has exited: the server's CPU count then holds its workers', and
    the orchestrator's, when it reaps the server."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:  # no children
        pass


def serve(folder: Path) -> None:
    """The server's loop in `folder` (its socket, the workers' import reports): import PRELOAD,
    say `ready`, then per request import what workers reported and fork a monitor; until stdin
    reaches EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the workers and the caller
    before = dict(os.environ)
    for name in PRELOAD:
        try:
            __import__(name)
        except ImportError:
            pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(folder / "socket"))
    listener.listen(64)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    stdin = sys.stdin.fileno()
    while True:
        readable, _, _ = select.select([listener, stdin], [], [], 1.0)
        _reap_monitors()
        if stdin in readable and not os.read(stdin, 4096):
            return  # the orchestrator is gone or done
        if listener in readable:
            conn, _ = listener.accept()
            try:
                request, output = _receive(conn)
            except (OSError, EOFError, ValueError):
                conn.close()
                continue
            _learn(folder / "learned")
            # What the server's imports, preloaded and learned, set in its environment (vLLM
            # sets a few): a worker importing them itself would have set them over its own.
            imported_env = {k: v for k, v in os.environ.items() if before.get(k) != v}
            request = {
                **request,
                "env": {**request["env"], **imported_env},
                "learned": str(folder / "learned"),
            }
            if os.fork() == 0:
                listener.close()
                _monitor(conn, request, output)
            conn.close()
            os.close(output)


if __name__ == "__main__":
    serve(Path(sys.argv[1]))
