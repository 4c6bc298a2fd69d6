"""`flywheel stack`: a team's servers, started and stopped as one.

One command starts what a team shares (README, Scaling):

- an S3 store for artifacts: a local `moto` server, unless `--s3-endpoint` names a real one;
- a Prefect server on PostgreSQL, with basic auth (`PREFECT_SERVER_API_AUTH_STRING`);
- an MLflow tracking server on PostgreSQL with MLflow's basic-auth app (users and permissions in
  their own PostgreSQL database), serving artifacts from the S3 bucket (`--artifacts-destination
  s3://...`): clients upload and download through it, so they need no S3 credentials at all.

It creates its databases and bucket when missing, binds to 127.0.0.1 unless told otherwise,
creates the MLflow users the flywheel runs as (`flywheel`, read-write) and reads as (`viewer`,
read-only), grants them their permissions on the flywheels named with `--flywheel`, writes the
users' environment to a 0600 file and prints how to load it. Ctrl-C (or SIGTERM) stops every
server it started, each in its own process group.

Credentials come from `flows.stack_secrets` (a 0600 JSON file made on first start, each value
overridable from the environment); they reach the servers through their environments only, never
their command lines (which `ps` shows), configs, or logs. `--only` starts a subset, which is how
`docker/compose.yaml` runs each server in its own container with this same code.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer

from flows.servers import ServerError, kill, mlflow_server_env, start, wait_healthy
from flows.stack_secrets import SecretsError, StackSecrets, write_private
from flows.stack_secrets import load as load_secrets

SERVERS = ("s3", "prefect", "mlflow")
ADMIN, WRITER, READER = "admin", "flywheel", "viewer"
DEFAULT_SECRETS = Path("~/.config/flywheel/stack-secrets.json")
CLIENT_ENV = "client.env"
READY = "stack ready"
AUTH_CACHE_S = 60
WORKER_PING_S = 300
# What the servers must not inherit from the shell that starts them: a client's own settings.
CLIENT_VARS = (
    "PREFECT_API_URL",
    "PREFECT_API_AUTH_STRING",
    "PREFECT_API_KEY",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "FLYWHEEL_LOCK_URL",
)


class StackError(ServerError):
    """The stack cannot start; the message says which part and why."""


@dataclass(frozen=True)
class StackConfig:
    """Where the stack listens and what it uses; every field is a `flywheel stack` option."""

    host: str = "127.0.0.1"
    prefect_port: int = 4200
    mlflow_port: int = 5000
    s3_port: int = 9000
    database_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    db_prefix: str = "flywheel_"
    bucket: str = "flywheel-artifacts"
    s3_endpoint: str | None = None
    state_dir: Path = Path("runs/stack")
    secrets: Path = DEFAULT_SECRETS
    default_permission: str = "READ"
    mlflow_workers: int = 2
    flywheels: tuple[str, ...] = ()
    only: tuple[str, ...] = SERVERS
    public_host: str | None = None
    mlflow_allowed_hosts: str | None = None  # Host headers MLflow accepts (default: localhost)
    bin_dir: Path = field(default_factory=lambda: Path(sys.executable).parent)

    @property
    def client_host(self) -> str:
        """The host name clients use: `public_host`, else the bound address (loopback for a
        wildcard bind)."""
        if self.public_host:
            return self.public_host
        return "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host

    def database(self, role: str) -> str:
        """The name of the stack's database for `role` (prefect, mlflow, mlflow_auth)."""
        return f"{self.db_prefix}{role}"

    @property
    def s3_url(self) -> str:
        return self.s3_endpoint or f"http://{self.client_host}:{self.s3_port}"

    @property
    def prefect_api(self) -> str:
        return f"http://{self.client_host}:{self.prefect_port}/api"

    @property
    def mlflow_uri(self) -> str:
        return f"http://{self.client_host}:{self.mlflow_port}"


def database_url(server_url: str, database: str, driver: str | None = None) -> str:
    """`server_url` (any PostgreSQL URL of the server) pointed at `database`, with `driver`
    (`asyncpg` for Prefect, `psycopg` for MLflow, None for libpq)."""
    from sqlalchemy.engine import make_url

    url = make_url(server_url)
    if url.get_backend_name() not in ("postgresql", "postgres"):
        raise StackError(f"--database-url: not a PostgreSQL URL: {url!r}")
    name = "postgresql" + (f"+{driver}" if driver else "")
    return url.set(drivername=name, database=database).render_as_string(hide_password=False)


def auth_ini(cfg: StackConfig) -> str:
    """MLflow's basic-auth config: no password in it (the admin's comes from the environment,
    MLFLOW_AUTH_ADMIN_PASSWORD, on the auth database's first start)."""
    return (
        "[mlflow]\n"
        f"default_permission = {cfg.default_permission}\n"
        f"database_uri = {database_url(cfg.database_url, cfg.database('mlflow_auth'), 'psycopg')}\n"
        f"admin_username = {ADMIN}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # Every request would otherwise re-hash its password (werkzeug's PBKDF2: ~0.3 s of a
        # core, seconds on a busy one); a changed password reaches other workers within this.
        f"auth_cache_ttl_seconds = {AUTH_CACHE_S}\n"
    )


def server_commands(cfg: StackConfig) -> dict[str, list[str]]:
    """Each server's command line (no secret in any: `ps` shows them)."""
    b = cfg.bin_dir
    return {
        "s3": [str(b / "moto_server"), "-H", cfg.host, "-p", str(cfg.s3_port)],
        "prefect": [
            *(str(b / "prefect"), "server", "start"),
            *("--host", cfg.host, "--port", str(cfg.prefect_port)),
        ],
        "mlflow": [
            *(str(b / "mlflow"), "server", "--app-name", "basic-auth"),
            *("--host", cfg.host, "--port", str(cfg.mlflow_port)),
            "--backend-store-uri",
            database_url(cfg.database_url, cfg.database("mlflow"), "psycopg"),
            "--artifacts-destination",
            f"s3://{cfg.bucket}/mlartifacts",
            *("--workers", str(cfg.mlflow_workers)),
            # uvicorn restarts a worker that does not answer its supervisor's ping in 5 s; a
            # worker still importing MLflow on a busy machine never would (a restart loop).
            *("--uvicorn-opts", f"--timeout-worker-healthcheck {WORKER_PING_S}"),
            *(("--allowed-hosts", cfg.mlflow_allowed_hosts) if cfg.mlflow_allowed_hosts else ()),
        ],
    }


def server_envs(cfg: StackConfig, s: StackSecrets, base: dict[str, str]) -> dict[str, dict]:
    """Each server's environment: `base` less any client settings, plus what it needs."""
    clean = {k: v for k, v in base.items() if k not in CLIENT_VARS}
    s3 = {
        "AWS_ACCESS_KEY_ID": s.s3_access_key,
        "AWS_SECRET_ACCESS_KEY": s.s3_secret_key,
        "AWS_DEFAULT_REGION": clean.get("AWS_DEFAULT_REGION", "us-east-1"),
    }
    return {
        # moto keeps objects in memory: it records every request to a file (0600, made by
        # `run_stack`) and replays it on the next start, so artifacts outlive a restart.
        "s3": clean
        | {"MOTO_ENABLE_RECORDING": "true", "MOTO_RECORDER_FILEPATH": str(s3_recording(cfg))},
        "prefect": clean
        | {
            "PREFECT_HOME": str(cfg.state_dir.resolve() / "prefect-home"),
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": database_url(
                cfg.database_url, cfg.database("prefect"), "asyncpg"
            ),
            "PREFECT_SERVER_API_AUTH_STRING": s.prefect_auth,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        },
        "mlflow": mlflow_server_env(clean)
        | s3
        | {
            "MLFLOW_S3_ENDPOINT_URL": cfg.s3_url,
            "MLFLOW_AUTH_CONFIG_PATH": str(cfg.state_dir.resolve() / "mlflow-auth.ini"),
            "MLFLOW_AUTH_ADMIN_PASSWORD": s.mlflow_admin_password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": s.mlflow_flask_secret,
        },
    }


def s3_recording(cfg: StackConfig) -> Path:
    """The local S3 server's request log, its only persistence."""
    return cfg.state_dir.resolve() / "s3-recording.jsonl"


def client_env(cfg: StackConfig, s: StackSecrets) -> dict[str, str]:
    """What a flywheel user or worker exports to use the stack (credentials included)."""
    return {
        "PREFECT_API_URL": cfg.prefect_api,
        "PREFECT_API_AUTH_STRING": s.prefect_auth,
        "MLFLOW_TRACKING_URI": cfg.mlflow_uri,
        "MLFLOW_TRACKING_USERNAME": WRITER,
        "MLFLOW_TRACKING_PASSWORD": s.mlflow_writer_password,
        "FLYWHEEL_LOCK_URL": database_url(cfg.database_url, cfg.database("prefect")),
    }


SECRET_VARS = ("PREFECT_API_AUTH_STRING", "MLFLOW_TRACKING_PASSWORD")


def exports_text(cfg: StackConfig, env: dict[str, str]) -> str:
    """What the stack prints: the plain variables as `export` lines, the credentials only as
    the file to source (a terminal's scrollback or a CI log must not hold them)."""
    env_file = cfg.state_dir.resolve() / CLIENT_ENV
    lines = [f"export {k}={v}" for k, v in env.items() if k not in SECRET_VARS]
    lines.append(f"set -a; . {env_file}; set +a   # also {' and '.join(SECRET_VARS)}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- effects


def ensure_databases(cfg: StackConfig, roles: list[str]) -> None:
    """Create the stack's databases that are missing."""
    import psycopg
    from psycopg import sql

    try:
        with psycopg.connect(database_url(cfg.database_url, "postgres"), autocommit=True) as c:
            for role in roles:
                name = cfg.database(role)
                if not c.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
                ).fetchone():
                    c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                    print(f"created database {name}", flush=True)
    except psycopg.Error as e:
        from flows.pg_lock import redact

        raise StackError(
            f"PostgreSQL at {redact(cfg.database_url)} (--database-url): {str(e).strip()}"
        ) from None


def ensure_bucket(cfg: StackConfig, s: StackSecrets) -> None:
    """Create the artifact bucket if it is missing."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    client = boto3.client(
        "s3",
        endpoint_url=cfg.s3_url,
        aws_access_key_id=s.s3_access_key,
        aws_secret_access_key=s.s3_secret_key,
        region_name="us-east-1",
    )
    try:
        names = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        if cfg.bucket not in names:
            client.create_bucket(Bucket=cfg.bucket)
            print(f"created bucket s3://{cfg.bucket}", flush=True)
    except (BotoCoreError, ClientError) as e:
        raise StackError(f"S3 store at {cfg.s3_url}: {e}") from None


def replay_s3(cfg: StackConfig) -> None:
    """Rebuild the local S3 server's objects from its recording (moto's recorder)."""
    import httpx

    r = httpx.post(f"{cfg.s3_url}/moto-api/recorder/replay-recording", timeout=3600)
    if r.status_code != 200:
        raise StackError(f"S3 store: replaying {s3_recording(cfg)} failed: {r.text[:500]}")
    print(f"S3 store: objects restored from {s3_recording(cfg)}", flush=True)


def provision_mlflow(cfg: StackConfig, s: StackSecrets) -> None:
    """Create (or re-password) the writer and reader users, and grant them their permissions
    on each flywheel's experiment and registered model (made here if missing)."""
    import warnings

    import httpx

    with warnings.catch_warnings():  # its import chain warns of starlette's deprecations
        warnings.simplefilter("ignore")
        from mlflow.server.auth import routes

    admin = httpx.Client(base_url=cfg.mlflow_uri, auth=(ADMIN, s.mlflow_admin_password), timeout=60)
    with admin:
        r = admin.get(routes.GET_USER, params={"username": ADMIN})
        if r.status_code == 401:
            raise StackError(
                f"MLflow's auth database {cfg.database('mlflow_auth')} has an admin whose "
                f"password is not the one in {cfg.secrets}: restore that file (or set "
                "FLYWHEEL_STACK_MLFLOW_ADMIN_PASSWORD), or drop that database to start over"
            )
        r.raise_for_status()
        for user, password in (
            (WRITER, s.mlflow_writer_password),
            (READER, s.mlflow_reader_password),
        ):
            exists = admin.get(routes.GET_USER, params={"username": user}).status_code == 200
            body = {"username": user, "password": password}
            r = (
                admin.patch(routes.UPDATE_USER_PASSWORD, json=body)
                if exists
                else admin.post(routes.CREATE_USER, json=body)
            )
            r.raise_for_status()
        for name in cfg.flywheels:
            exp = admin.get(
                "/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": name}
            )
            if exp.status_code == 404:
                exp = admin.post("/api/2.0/mlflow/experiments/create", json={"name": name})
                exp.raise_for_status()
                exp_id = exp.json()["experiment_id"]
            else:
                exp.raise_for_status()
                exp_id = exp.json()["experiment"]["experiment_id"]
            model = admin.get("/api/2.0/mlflow/registered-models/get", params={"name": name})
            if model.status_code == 404:
                admin.post(
                    "/api/2.0/mlflow/registered-models/create", json={"name": name}
                ).raise_for_status()
            for user, level in ((WRITER, "MANAGE"), (READER, "READ")):
                for kind, rid in (("experiment", exp_id), ("registered_model", name)):
                    grant = {
                        "username": user,
                        "resource_type": kind,
                        "resource_id": rid,
                        "permission": level,
                    }
                    r = admin.post(routes.GRANT_USER_PERMISSION, json=grant)
                    if r.status_code == 400 and "RESOURCE_ALREADY_EXISTS" in r.text:
                        continue  # granted on an earlier start (or changed by an admin since)
                    if r.status_code != 200:
                        raise StackError(f"MLflow: granting {grant}: {r.status_code} {r.text}")


def _stop(procs: dict[str, subprocess.Popen], grace_s: float = 20) -> None:
    """SIGTERM each server's process group (newest first), then SIGKILL what is left."""
    for proc in reversed(procs.values()):
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for name, proc in reversed(procs.items()):
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"{name} server did not stop in {grace_s:.0f} s: killing it", flush=True)
            kill(proc)


def run_stack(cfg: StackConfig, startup_s: float = 600) -> int:
    """Start the stack, print its exports, serve until SIGINT/SIGTERM, stop cleanly."""
    unknown = [o for o in cfg.only if o not in SERVERS]
    if unknown:
        raise StackError(
            f"--only: unknown server {unknown[0]!r} (choose from {', '.join(SERVERS)})"
        )
    try:
        secrets = load_secrets(cfg.secrets)
    except SecretsError as e:
        raise StackError(str(e)) from None
    logs = cfg.state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    roles = [
        r
        for r, srv in (("prefect", "prefect"), ("mlflow", "mlflow"), ("mlflow_auth", "mlflow"))
        if srv in cfg.only
    ]
    if roles:
        ensure_databases(cfg, roles)
    write_private(cfg.state_dir / "mlflow-auth.ini", auth_ini(cfg))
    if not s3_recording(cfg).exists():
        write_private(s3_recording(cfg), "")
    recorded = s3_recording(cfg).stat().st_size > 0  # before the server records our own calls
    commands, envs = server_commands(cfg), server_envs(cfg, secrets, dict(os.environ))
    bases = {"s3": cfg.s3_url, "prefect": cfg.prefect_api, "mlflow": cfg.mlflow_uri}
    health = {"s3": f"{cfg.s3_url}/moto-api/", "prefect": f"{cfg.prefect_api}/health"}
    health["mlflow"] = f"{cfg.mlflow_uri}/health"
    procs: dict[str, subprocess.Popen] = {}
    stopping: list[int] = []

    def on_signal(signum, _frame):
        stopping.append(signum)
        raise KeyboardInterrupt

    # Both, explicitly: a stack started in the background (`make stack &`, a CI step) inherits
    # an ignored SIGINT, which Python would leave ignored.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        for name in SERVERS:
            if name not in cfg.only or (name == "s3" and cfg.s3_endpoint):
                continue
            log = logs / f"{name}.log"
            # In its own session: Ctrl-C reaches the stack, which stops each in turn.
            procs[name] = start(commands[name], log, envs[name])
            wait_healthy(name, health[name], procs[name], log, startup_s)
            print(f"{name} server up: {bases[name]}  (log {log})", flush=True)
            if name == "s3" and recorded:
                replay_s3(cfg)
            if name == "s3" or (name == "mlflow" and cfg.s3_endpoint):
                ensure_bucket(cfg, secrets)
        if cfg.s3_endpoint and "mlflow" not in cfg.only and "s3" in cfg.only:
            ensure_bucket(cfg, secrets)
        if "mlflow" in cfg.only:
            provision_mlflow(cfg, secrets)
        env = client_env(cfg, secrets)
        write_private(cfg.state_dir / CLIENT_ENV, "".join(f"{k}={v}\n" for k, v in env.items()))
        print(f"\n{READY}. Users and workers export (Ctrl-C stops the stack):", flush=True)
        print(exports_text(cfg, env), flush=True)
        if "mlflow" in cfg.only:
            print(
                f"MLflow users: {WRITER} (writes), {READER} (reads), {ADMIN}; passwords in "
                f"{cfg.secrets.expanduser()}. Artifacts: s3://{cfg.bucket}/mlartifacts at "
                f"{cfg.s3_url} (MLFLOW_S3_ENDPOINT_URL), served through MLflow: clients need no "
                "AWS_* keys.",
                flush=True,
            )
        while True:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    raise StackError(
                        f"{name} server exited with {proc.returncode} (log {logs / name}.log)"
                    )
            time.sleep(1)
    except KeyboardInterrupt:
        print("stopping the stack", flush=True)
        return 0
    finally:
        _stop(procs)


def stack(
    host: Annotated[
        str, typer.Option(envvar="FLYWHEEL_STACK_HOST", help="Bind address.")
    ] = "127.0.0.1",
    prefect_port: Annotated[int, typer.Option(envvar="FLYWHEEL_STACK_PREFECT_PORT")] = 4200,
    mlflow_port: Annotated[int, typer.Option(envvar="FLYWHEEL_STACK_MLFLOW_PORT")] = 5000,
    s3_port: Annotated[
        int, typer.Option(envvar="FLYWHEEL_STACK_S3_PORT", help="Local S3 server's port.")
    ] = 9000,
    database_url: Annotated[
        str,
        typer.Option(
            envvar="FLYWHEEL_STACK_DATABASE_URL", help="PostgreSQL server (any database of it)."
        ),
    ] = StackConfig.database_url,
    db_prefix: Annotated[
        str, typer.Option(envvar="FLYWHEEL_STACK_DB_PREFIX", help="Names the stack's databases.")
    ] = "flywheel_",
    bucket: Annotated[
        str, typer.Option(envvar="FLYWHEEL_STACK_BUCKET", help="Artifact bucket.")
    ] = "flywheel-artifacts",
    s3_endpoint: Annotated[
        str | None,
        typer.Option(
            envvar="FLYWHEEL_STACK_S3_ENDPOINT",
            help="An S3 store to use instead of a local moto server.",
        ),
    ] = None,
    state_dir: Annotated[
        Path, typer.Option(envvar="FLYWHEEL_STACK_STATE", help="Logs, auth config, client.env.")
    ] = Path("runs/stack"),
    secrets: Annotated[
        Path,
        typer.Option(envvar="FLYWHEEL_STACK_SECRETS", help="Secrets file (0600; made if missing)."),
    ] = DEFAULT_SECRETS,
    flywheel: Annotated[
        list[str] | None,
        typer.Option(help="A flywheel name whose experiment and model get the users' permissions."),
    ] = None,
    default_permission: Annotated[
        str, typer.Option(help="MLflow's permission for resources without a grant.")
    ] = "READ",
    mlflow_workers: Annotated[int, typer.Option(min=1)] = 2,
    only: Annotated[
        list[str] | None, typer.Option(help="Start only these: s3, prefect, mlflow.")
    ] = None,
    mlflow_allowed_hosts: Annotated[
        str | None,
        typer.Option(
            envvar="FLYWHEEL_STACK_MLFLOW_ALLOWED_HOSTS",
            help="Host headers MLflow accepts, comma-separated (for a non-loopback bind).",
        ),
    ] = None,
    public_host: Annotated[
        str | None,
        typer.Option(envvar="FLYWHEEL_STACK_PUBLIC_HOST", help="Host name in the printed URLs."),
    ] = None,
) -> None:
    """Start the team stack: Prefect and MLflow servers on PostgreSQL, MLflow artifacts on S3,
    authentication on both; print what users export. Ctrl-C stops it."""
    cfg = StackConfig(
        host=host,
        prefect_port=prefect_port,
        mlflow_port=mlflow_port,
        s3_port=s3_port,
        database_url=database_url,
        db_prefix=db_prefix,
        bucket=bucket,
        s3_endpoint=s3_endpoint,
        state_dir=state_dir,
        secrets=secrets.expanduser(),
        default_permission=default_permission,
        mlflow_workers=mlflow_workers,
        flywheels=tuple(flywheel or ()),
        only=tuple(only or SERVERS),
        public_host=public_host,
        mlflow_allowed_hosts=mlflow_allowed_hosts,
    )
    import httpx

    try:
        raise typer.Exit(run_stack(cfg))
    except (ServerError, httpx.HTTPError) as e:  # a server's refusal names its URL and status
        print(f"flywheel stack: {e}", file=sys.stderr, flush=True)
        raise typer.Exit(1) from None


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    typer.run(stack)
