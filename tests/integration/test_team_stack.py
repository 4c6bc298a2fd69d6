"""The team stack for real: `python -m flows.stack` starts a Prefect server and an MLflow server
on this machine's PostgreSQL (databases of their own, dropped afterwards), MLflow's artifacts on
a local S3 server, authentication on both. It is started once for the module; every test uses it.

- Requests without credentials (or with wrong ones) are refused with 401 by both servers.
- The tiny flywheel runs one generation end to end as the stack's MLflow writer, through the
  Prefect server, with the run lock on PostgreSQL; its artifacts land in the S3 bucket, and no
  credential appears in its output, MLflow params, tags, metrics or artifacts, Prefect's logs,
  its runs folder, the servers' logs or any process's command line.
- The read-only MLflow user (READ on the registered model) cannot move `champion`.
- The PostgreSQL run lock: a second run waits while the first holds it and proceeds at once
  when the holder is SIGKILLed.
"""

import base64
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, fields
from pathlib import Path

import httpx
import pytest

from flows.servers import free_port
from flows.stack import ADMIN, CLIENT_ENV, READER, READY, WRITER
from flows.stack_secrets import StackSecrets
from flows.stack_secrets import load as load_secrets
from tests.runs import ROOT, TINY, flywheel

pytestmark = pytest.mark.slow
PG = "postgresql://postgres@127.0.0.1:5432/postgres"
NAME = "stacktiny"


@dataclass
class Stack:
    proc: subprocess.Popen
    state: Path
    log: Path
    secrets: StackSecrets
    env: dict[str, str]  # what clients export (client.env)
    databases: list[str]

    @property
    def prefect(self) -> str:
        return self.env["PREFECT_API_URL"]

    @property
    def mlflow(self) -> str:
        return self.env["MLFLOW_TRACKING_URI"]


def _drop_databases(names: list[str]) -> None:
    import psycopg

    with psycopg.connect(PG, autocommit=True) as c:
        for name in names:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Stack:
    tmp = tmp_path_factory.mktemp("stack")
    prefix = f"fwtest_{uuid.uuid4().hex[:8]}_"
    databases = [f"{prefix}{r}" for r in ("prefect", "mlflow", "mlflow_auth")]
    log = tmp / "stack.log"
    args = [
        *(sys.executable, "-m", "flows.stack", "--db-prefix", prefix, "--flywheel", NAME),
        *("--prefect-port", str(free_port()), "--mlflow-port", str(free_port())),
        *("--s3-port", str(free_port()), "--mlflow-workers", "1"),
        *("--state-dir", str(tmp / "state"), "--secrets", str(tmp / "secrets.json")),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "MLFLOW_"))}
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 900
        while READY not in log.read_text():
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)
        lines = (tmp / "state" / CLIENT_ENV).read_text().splitlines()
        client = dict(line.split("=", 1) for line in lines)
        yield Stack(proc, tmp / "state", log, load_secrets(tmp / "secrets.json"), client, databases)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        _drop_databases(databases)
    assert "stopping the stack" in log.read_text()


def test_servers_refuse_requests_without_credentials(stack):
    prefect_creds = tuple(stack.secrets.prefect_auth.split(":", 1))
    search = f"{stack.prefect}/flow_runs/filter"
    assert httpx.post(search, json={}, timeout=60).status_code == 401
    assert httpx.post(search, json={}, auth=("flywheel", "wrong"), timeout=60).status_code == 401
    assert httpx.post(search, json={}, auth=prefect_creds, timeout=60).status_code == 200

    experiments = f"{stack.mlflow}/api/2.0/mlflow/experiments/search"
    params = {"max_results": 1}
    assert httpx.get(experiments, params=params, timeout=60).status_code == 401
    wrong = httpx.get(experiments, params=params, auth=(WRITER, "wrong-password"), timeout=60)
    assert wrong.status_code == 401
    writer = (WRITER, stack.secrets.mlflow_writer_password)
    assert httpx.get(experiments, params=params, auth=writer, timeout=60).status_code == 200

    secrets_file = stack.state.parent / "secrets.json"
    for path in (secrets_file, stack.state / CLIENT_ENV, stack.state / "mlflow-auth.ini"):
        assert path.stat().st_mode & 0o077 == 0, path


@pytest.fixture(scope="module")
def tiny_run(stack, runs_dir, shell_env) -> tuple[subprocess.CompletedProcess, Path]:  # noqa: F811
    """One generation of the tiny flywheel against the stack, as its MLflow writer."""
    env = shell_env | stack.env
    r = flywheel(
        [
            *("run", str(TINY), "--set", "generations=1"),
            *("--set", f"runs_dir={runs_dir}", "--set", f"name={NAME}"),
        ],
        env,
        timeout=1200,
    )
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    return r, runs_dir / NAME


def _needles(s: StackSecrets) -> list[bytes]:
    values = [v.encode() for v in s.values()]
    basic = [base64.b64encode(s.prefect_auth.encode())]  # as an Authorization header has it
    for user, pw in ((WRITER, s.mlflow_writer_password), (ADMIN, s.mlflow_admin_password)):
        basic.append(base64.b64encode(f"{user}:{pw}".encode()))
    return values + basic


def _leaks(blob: bytes, needles: list[bytes]) -> list[int]:
    return [i for i, n in enumerate(needles) if n in blob]


def test_flywheel_runs_with_credentials_and_writes_none_down(stack, tiny_run, tmp_path):
    import boto3
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts

    r, fw = tiny_run
    assert (fw / "gen-0001" / "gate" / "manifest.json").is_file()
    assert not (fw / ".run.lock").exists()  # the run lock was PostgreSQL's, not the file
    needles = _needles(stack.secrets)
    found: dict[str, list[str]] = {}
    names = [*(f.name for f in fields(StackSecrets)), "prefect password", "basic", "basic", "basic"]

    def scan(where: str, blob: bytes, skip: tuple[str, ...] = ()) -> None:
        if hits := [names[i] for i in _leaks(blob, needles) if names[i] not in skip]:
            found[where] = hits

    scan("flywheel stdout/stderr", (r.stdout + r.stderr).encode())
    for path in [*fw.rglob("*"), *stack.state.rglob("*"), stack.log]:
        if path.is_file() and path.name not in ("secrets.json", CLIENT_ENV):
            # The local S3 server's recording is the store's own data (0600): its requests'
            # SigV4 headers name the access key id, never the secret key.
            skip = ("s3_access_key",) if path.name == "s3-recording.jsonl" else ()
            scan(str(path), path.read_bytes(), skip)

    os.environ["MLFLOW_TRACKING_USERNAME"] = WRITER
    os.environ["MLFLOW_TRACKING_PASSWORD"] = stack.secrets.mlflow_writer_password
    try:
        client = MlflowClient(stack.mlflow)
        exp = client.get_experiment_by_name(NAME)
        runs = client.search_runs([exp.experiment_id])
        assert {r.data.tags.get("flywheel.role") for r in runs} >= {"generation"}
        assert all(r.info.status == "FINISHED" for r in runs)
        for run in runs:
            scan(f"run {run.info.run_id} params/tags/metrics", repr(run.data).encode())
            local = download_artifacts(
                run_id=run.info.run_id,
                dst_path=str(tmp_path / run.info.run_id),
                tracking_uri=stack.mlflow,
            )
            files = [p for p in Path(local).rglob("*") if p.is_file()]
            for p in files:
                scan(f"artifact {p.relative_to(tmp_path)}", p.read_bytes())
        assert any(r.data.tags.get("flywheel.role") == "generation" for r in runs)
        assert client.search_model_versions(f"name = '{NAME}'")
    finally:
        os.environ.pop("MLFLOW_TRACKING_USERNAME")
        os.environ.pop("MLFLOW_TRACKING_PASSWORD")

    logs = httpx.post(
        f"{stack.prefect}/logs/filter",
        json={"limit": 200},
        auth=tuple(stack.secrets.prefect_auth.split(":", 1)),
        timeout=60,
    )
    logs.raise_for_status()
    assert logs.json(), "the run left no Prefect logs on the server"
    scan("Prefect logs", logs.content)

    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            scan(str(cmdline), cmdline.read_bytes())
        except OSError:
            pass  # a process that ended meanwhile
    assert not found, {k: v for k, v in found.items()}

    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{_s3_port(stack)}",
        aws_access_key_id=stack.secrets.s3_access_key,
        aws_secret_access_key=stack.secrets.s3_secret_key,
        region_name="us-east-1",
    )
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="flywheel-artifacts").get("Contents", [])]
    assert any(k.startswith("mlartifacts/") and k.endswith("lineage.json") for k in keys), keys


def _s3_port(stack: Stack) -> int:
    args = stack.proc.args
    return int(args[args.index("--s3-port") + 1])


def test_read_only_user_cannot_move_the_champion_alias(stack, tiny_run):
    from mlflow.server.auth import routes

    admin = (ADMIN, stack.secrets.mlflow_admin_password)
    reader = (READER, stack.secrets.mlflow_reader_password)
    writer = (WRITER, stack.secrets.mlflow_writer_password)
    api = f"{stack.mlflow}/api/2.0/mlflow"
    for user, level in ((READER, "READ"), (WRITER, "MANAGE")):  # the stack's --flywheel grants
        perm = httpx.get(
            f"{stack.mlflow}{routes.GET_USER_PERMISSION}",
            params={"username": user, "resource_type": "registered_model", "resource_id": NAME},
            auth=admin,
            timeout=60,
        )
        assert perm.status_code == 200 and perm.json()["permission"] == level, perm.text
    got = httpx.get(f"{api}/registered-models/get", params={"name": NAME}, auth=reader, timeout=60)
    assert got.status_code == 200  # reading is allowed
    model = got.json()["registered_model"]
    champion = {a["alias"]: a["version"] for a in model.get("aliases", [])}.get("champion")
    versions = httpx.get(
        f"{api}/model-versions/search", params={"filter": f"name='{NAME}'"}, auth=reader, timeout=60
    ).json()["model_versions"]
    # another version where there is one; else the same (setting an alias needs EDIT either way)
    other = next(
        (v["version"] for v in versions if v["version"] != champion), versions[0]["version"]
    )

    alias = {"name": NAME, "alias": "champion", "version": other}
    refused = httpx.post(f"{api}/registered-models/alias", json=alias, auth=reader, timeout=60)
    assert refused.status_code == 403, refused.text
    if champion is not None:
        drop = {"name": NAME, "alias": "champion"}
        gone = httpx.request(
            "DELETE", f"{api}/registered-models/alias", json=drop, auth=reader, timeout=60
        )
        assert gone.status_code == 403, gone.text
    after = httpx.get(
        f"{api}/registered-models/get", params={"name": NAME}, auth=reader, timeout=60
    )
    aliases = {
        a["alias"]: a["version"] for a in after.json()["registered_model"].get("aliases", [])
    }
    assert aliases.get("champion") == champion
    # the writer may (moving it to where it already is changes nothing)
    if champion is not None:
        same = {"name": NAME, "alias": "champion", "version": champion}
        ok = httpx.post(f"{api}/registered-models/alias", json=same, auth=writer, timeout=60)
        assert ok.status_code == 200, ok.text


HOLDER = """
import sys, time
from pathlib import Path
from flows.run_lock import one_run_at_a_time
with one_run_at_a_time(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(600)
"""


def test_postgres_run_lock_waits_and_dies_with_its_holder(stack, tmp_path, monkeypatch):
    from flows.run_lock import one_run_at_a_time

    monkeypatch.setenv("FLYWHEEL_LOCK_URL", stack.env["FLYWHEEL_LOCK_URL"])
    env = os.environ | {"FLYWHEEL_LOCK_URL": stack.env["FLYWHEEL_LOCK_URL"]}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / "locked")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with one_run_at_a_time(tmp_path / "other"):  # another flywheel is not held up
            pass
        acquired = threading.Event()

        def second_run():
            with one_run_at_a_time(tmp_path / "locked"):
                acquired.set()

        t = threading.Thread(target=second_run, daemon=True)
        t.start()
        assert not acquired.wait(2), "the second run did not wait for the first"
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        t0 = time.monotonic()
        assert acquired.wait(30)
        assert time.monotonic() - t0 < 5
        t.join(5)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
