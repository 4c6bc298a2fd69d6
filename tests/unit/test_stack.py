"""The team stack's pure parts: database URLs, the servers' command lines and environments, what
clients export, the secrets file's rules, and the PostgreSQL run lock's key and URLs."""

import stat
from pathlib import Path

import pytest

from flows import pg_lock
from flows.servers import MLFLOW_SERVER_DEFAULTS, mlflow_server
from flows.stack import (
    CLIENT_VARS,
    SECRET_VARS,
    StackConfig,
    StackError,
    auth_ini,
    client_env,
    database_url,
    exports_text,
    server_commands,
    server_envs,
)
from flows.stack_secrets import SecretsError, generate, load


@pytest.mark.parametrize(
    "server, db, driver, want",
    [
        ("postgresql://postgres@127.0.0.1:5432/postgres", "fw_prefect", "asyncpg",
         "postgresql+asyncpg://postgres@127.0.0.1:5432/fw_prefect"),
        ("postgresql+psycopg://u:p%40ss@db:6543/x?sslmode=require", "fw_mlflow", "psycopg",
         "postgresql+psycopg://u:p%40ss@db:6543/fw_mlflow?sslmode=require"),
        ("postgres://u@db/x", "fw_prefect", None, "postgresql://u@db/fw_prefect"),
    ],
)  # fmt: skip
def test_database_url_points_at_the_stack_database(server, db, driver, want):
    assert database_url(server, db, driver) == want


def test_database_url_refuses_other_databases():
    with pytest.raises(StackError, match="not a PostgreSQL URL"):
        database_url("mysql://root@127.0.0.1/x", "fw")


def test_no_secret_in_command_lines_configs_or_printed_exports(tmp_path):
    cfg = StackConfig(state_dir=tmp_path, db_prefix="t_", flywheels=("demo",))
    s = generate()
    visible = " ".join(" ".join(c) for c in server_commands(cfg).values())
    env = client_env(cfg, s)
    visible += auth_ini(cfg) + exports_text(cfg, env)
    for value in s.values():
        assert value not in visible
    assert "--app-name basic-auth" in visible
    assert "--artifacts-destination s3://flywheel-artifacts/mlartifacts" in visible
    assert "postgresql+psycopg://postgres@127.0.0.1:5432/t_mlflow" in visible
    # what the printed text holds back, the 0600 file carries
    assert set(SECRET_VARS) <= set(env) and env["MLFLOW_TRACKING_USERNAME"] == "flywheel"
    assert env["FLYWHEEL_LOCK_URL"] == "postgresql://postgres@127.0.0.1:5432/t_prefect"


def test_servers_get_their_secrets_and_none_of_the_clients_settings(tmp_path):
    cfg = StackConfig(state_dir=tmp_path, host="0.0.0.0", public_host="stack.lan")
    s = generate()
    base = {"PATH": "/bin", **{v: "client" for v in CLIENT_VARS}}
    envs = server_envs(cfg, s, base)
    for env in envs.values():
        assert env["PATH"] == "/bin" and not set(CLIENT_VARS) & set(env)
    assert envs["prefect"]["PREFECT_SERVER_API_AUTH_STRING"] == s.prefect_auth
    assert envs["prefect"]["PREFECT_SERVER_DATABASE_CONNECTION_URL"].startswith(
        "postgresql+asyncpg://"
    )
    assert envs["mlflow"]["MLFLOW_AUTH_ADMIN_PASSWORD"] == s.mlflow_admin_password
    assert envs["mlflow"]["AWS_SECRET_ACCESS_KEY"] == s.s3_secret_key
    assert envs["mlflow"]["MLFLOW_S3_ENDPOINT_URL"] == "http://stack.lan:9000"
    assert "AWS_SECRET_ACCESS_KEY" not in envs["prefect"]
    assert client_env(cfg, s)["PREFECT_API_URL"] == "http://stack.lan:4200/api"


def test_mlflow_runs_no_job_runner_unless_the_environment_asks(tmp_path):
    """MLflow's GenAI job runner (eight processes) is off by default; a user's setting wins."""
    cfg, s = StackConfig(state_dir=tmp_path), generate()
    assert server_envs(cfg, s, {})["mlflow"]["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    asked = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true"}
    assert server_envs(cfg, s, asked)["mlflow"]["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "true"
    assert mlflow_server(tmp_path / "m", env={}).env == MLFLOW_SERVER_DEFAULTS


def test_secrets_file_is_made_private_and_reused(tmp_path):
    path = tmp_path / "cfg" / "secrets.json"
    first = load(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load(path) == first
    assert first.prefect_auth.startswith("flywheel:")
    assert len(set(first.values())) == len(first.values())  # all different


def test_secrets_file_readable_by_others_is_refused(tmp_path):
    path = tmp_path / "secrets.json"
    load(path)
    path.chmod(0o644)
    with pytest.raises(SecretsError, match="chmod 600"):
        load(path)


def test_secrets_from_the_environment_win_and_bad_files_are_named(tmp_path, monkeypatch):
    path = tmp_path / "secrets.json"
    load(path)
    monkeypatch.setenv("FLYWHEEL_STACK_MLFLOW_WRITER_PASSWORD", "from-the-environment")
    assert load(path).mlflow_writer_password == "from-the-environment"
    monkeypatch.setenv("FLYWHEEL_STACK_MLFLOW_READER_PASSWORD", "short")
    with pytest.raises(SecretsError, match="mlflow_reader_password must have 12"):
        load(path)
    bad = tmp_path / "bad.json"
    bad.write_text('{"prefect_auth": "x:y", "extra": 1}')
    bad.chmod(0o600)
    with pytest.raises(SecretsError, match=f"{bad}: missing .*mlflow_admin_password"):
        load(bad)
    with pytest.raises(SecretsError, match="no secrets file"):
        load(tmp_path / "none.json", create=False)


def test_lock_key_and_urls():
    assert pg_lock.lock_key("demo") == pg_lock.lock_key("demo") != pg_lock.lock_key("demo2")
    assert -(2**31) <= pg_lock.lock_key("demo") < 2**31
    assert pg_lock.libpq_url("postgresql+asyncpg://u:pw@h:5432/d") == "postgresql://u:pw@h:5432/d"
    assert pg_lock.redact("postgresql://u:pw@h/d") == "postgresql://u:***@h/d"
    with pytest.raises(ValueError, match="FLYWHEEL_LOCK_URL: not a PostgreSQL URL"):
        pg_lock.libpq_url("sqlite:///x.db")


def test_unreachable_lock_database_names_the_variable():
    with pytest.raises(
        RuntimeError, match="FLYWHEEL_LOCK_URL=postgresql://u:\\*\\*\\*@127.0.0.1:1"
    ):
        with pg_lock.advisory_lock("postgresql://u:secret@127.0.0.1:1/x", "demo"):
            pass


def test_state_dir_default_is_ignored_by_git():
    root = Path(__file__).parents[2]
    assert StackConfig().state_dir.parts[0] + "/" in (root / ".gitignore").read_text()
