"""Server processes the project starts itself (Prefect, MLflow, an S3 store, vLLM's OpenAI
server): the one way to start one, wait until it answers, and stop it.

`flywheel stack`, `make bench`'s load benchmark and the tests that run against real servers all
start them here. Each server runs in its own session, so stopping it (`stop`, `kill`) signals its
whole process group: a server's own workers (uvicorn's, vLLM's engine core) go with it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

BIN = Path(sys.executable).parent
"""The virtualenv's scripts (`prefect`, `mlflow`, `moto_server`)."""


class ServerError(RuntimeError):
    """A server exited while starting, or did not answer in time; the message has its log tail."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (the OS's pick)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def start(
    cmd: list[str], log: Path, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen:
    """Start `cmd` in its own session, its output appended to `log`."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            cmd,
            cwd=cwd,
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def log_tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else ""


def wait_healthy(
    name: str, url: str, proc: subprocess.Popen | None, log: Path, timeout: float
) -> float:
    """Wait until `url` answers 200; the seconds that took. Raises `ServerError` (with the log's
    tail) as soon as `proc` exits, or when `timeout` seconds pass."""
    import httpx

    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if proc is not None and proc.poll() is not None:
            raise ServerError(
                f"{name} server exited with {proc.returncode}; {log}:\n{log_tail(log)}"
            )
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise ServerError(
        f"{name} server did not answer {url} within {timeout:.0f} s; {log}:\n{log_tail(log)}"
    )


def stop(proc: subprocess.Popen | None, grace_s: float = 30) -> None:
    """SIGTERM the server's process group; SIGKILL it if it is still there after `grace_s`."""
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        kill(proc)


def kill(proc: subprocess.Popen | None) -> None:
    """SIGKILL the server's process group at once (a crash, as tests of faults want it)."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def prefect_server_cmd(port: int, host: str = "127.0.0.1") -> list[str]:
    """`prefect server start` (its database: `PREFECT_API_DATABASE_CONNECTION_URL`, else a
    SQLite file in `PREFECT_HOME`)."""
    return [str(BIN / "prefect"), "server", "start", "--host", host, "--port", str(port)]


def mlflow_server_cmd(
    port: int, backend_store_uri: str, artifacts: str, host: str = "127.0.0.1", workers: int = 1
) -> list[str]:
    """`mlflow server` on a backend store, serving artifacts from `artifacts`."""
    return [
        *(str(BIN / "mlflow"), "server", "--host", host, "--port", str(port)),
        *("--backend-store-uri", backend_store_uri, "--artifacts-destination", artifacts),
        *("--workers", str(workers)),
    ]


# MLflow's server also starts, unless told not to, a job runner and seven task-queue consumers
# (`huey`) for its GenAI jobs (scheduled scorers, prompt optimization), which the flywheel never
# submits: 3.6x the busy CPU of a start (34 against 9.5 CPU-s by 20 s after it answers) and 2 GiB
# of memory (`python -m bench.bench_mlflow_server`,
# bench/results/20261206T234217Z-mlflow-jobs.json). An environment that sets the variable keeps
# its value.
MLFLOW_SERVER_DEFAULTS = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def mlflow_server_env(env: Mapping[str, str]) -> dict[str, str]:
    """`env` for an `mlflow server`, with the flywheel's defaults where it sets nothing."""
    return {**MLFLOW_SERVER_DEFAULTS, **env}


class Server:
    """One server on a fixed port: `start` (and again after `kill`: same port, same store),
    `kill`, `stop`. `cmd` is its command line, `url` what clients are given, `health` the URL
    that answers 200 when it is up."""

    def __init__(
        self,
        name: str,
        cmd: list[str],
        url: str,
        health: str,
        log: Path,
        env: Mapping[str, str] | None = None,
        startup_s: float = 300,
    ) -> None:
        self.name, self.cmd, self.url, self.health, self.log = name, cmd, url, health, log
        self.env, self.startup_s = env, startup_s
        self.proc: subprocess.Popen | None = None

    def start(self) -> float:
        """Start it and wait until it answers; the seconds that took."""
        self.proc = start(self.cmd, self.log, self.env)
        try:
            return wait_healthy(self.name, self.health, self.proc, self.log, self.startup_s)
        except BaseException:
            kill(self.proc)
            raise

    def kill(self) -> None:
        kill(self.proc)

    def stop(self) -> None:
        stop(self.proc)


def prefect_server(
    home: Path,
    env: Mapping[str, str] | None = None,
    port: int | None = None,
    temporary: bool = False,
) -> Server:
    """A Prefect server with its home (and SQLite database) in `home`; its `url` is the API's
    (what clients set as `PREFECT_API_URL`). `temporary`: it runs what Prefect's temporary local
    server runs (the API and the services that record task runs and events; no scheduler, no
    UI), which is all a run needs that no deployment or schedule starts."""
    port = port or free_port()
    home.mkdir(parents=True, exist_ok=True)
    # The server is no client of another API: a PREFECT_API_URL its caller runs with is dropped.
    env = {k: v for k, v in (os.environ if env is None else env).items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(home)
    api = f"http://127.0.0.1:{port}/api"
    cmd = prefect_server_cmd(port)
    if temporary:  # what `SubprocessASGIServer`, the temporary server, sets for its app
        env["PREFECT__SERVER_EPHEMERAL"] = "1"
        cmd.append("--no-ui")
    return Server("prefect", cmd, api, f"{api}/health", home / "server.log", env)


def mlflow_server(
    root: Path, env: Mapping[str, str] | None = None, port: int | None = None
) -> Server:
    """An MLflow server on a SQLite file in `root`, artifacts in `root/artifacts`; its `url` is
    what clients set as `MLFLOW_TRACKING_URI`."""
    port = port or free_port()
    root.mkdir(parents=True, exist_ok=True)
    cmd = mlflow_server_cmd(port, f"sqlite:///{root / 'mlflow.db'}", str(root / "artifacts"))
    url = f"http://127.0.0.1:{port}"
    env = mlflow_server_env(os.environ if env is None else env)
    return Server("mlflow", cmd, url, f"{url}/health", root / "server.log", env)
