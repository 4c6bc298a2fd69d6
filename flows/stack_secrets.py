"""The team stack's credentials: one JSON file, mode 0600, made on first start.

Every secret of the stack lives here and nowhere else: Prefect's basic-auth string, the MLflow
admin's and users' passwords, the S3 store's keys and the MLflow web app's session key. A file
that others can read is refused (like ssh's keys), a missing one is generated with `secrets`, and
each value can be overridden by an environment variable (`FLYWHEEL_STACK_<KEY>`, upper case), so
a secret manager can inject them instead. Nothing here writes a secret anywhere but this file and
the 0600 client environment file that `flows.stack` writes beside its state.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from dataclasses import asdict, dataclass, fields
from pathlib import Path

ENV_PREFIX = "FLYWHEEL_STACK_"


class SecretsError(RuntimeError):
    """The secrets file is unusable; the message names it and what to do."""


@dataclass(frozen=True)
class StackSecrets:
    prefect_auth: str  # "user:password", Prefect's basic-auth string (server and clients)
    mlflow_admin_password: str  # the auth app's admin, created on its first start
    mlflow_writer_password: str  # the user the flywheel runs as
    mlflow_reader_password: str  # a read-only user
    s3_access_key: str
    s3_secret_key: str
    mlflow_flask_secret: str  # MLFLOW_FLASK_SERVER_SECRET_KEY (CSRF of the auth app's forms)

    def values(self) -> list[str]:
        """Every secret value, for scans that must not find any of them."""
        return [*asdict(self).values(), self.prefect_auth.split(":", 1)[1]]


def generate(prefect_user: str = "flywheel") -> StackSecrets:
    """Fresh random secrets (URL-safe, 32 characters: MLflow asks 12 at least)."""
    values = {f.name: secrets.token_urlsafe(24) for f in fields(StackSecrets)}
    values["prefect_auth"] = f"{prefect_user}:{values['prefect_auth']}"
    values["s3_access_key"] = "FW" + secrets.token_hex(9).upper()
    return StackSecrets(**values)


def _check_mode(path: Path) -> None:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretsError(
            f"{path}: readable by others (mode {stat.filemode(mode)}); "
            f"make it private with: chmod 600 {path}"
        )


def load(path: Path, create: bool = True) -> StackSecrets:
    """The stack's secrets from `path` (made, mode 0600, when missing and `create`), each
    overridden by `FLYWHEEL_STACK_<KEY>` where that is set."""
    path = Path(path).expanduser()
    if not path.exists():
        if not create:
            raise SecretsError(f"{path}: no secrets file (start the stack once to make one)")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(generate()), f, indent=1)
    _check_mode(path)
    try:
        stored = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SecretsError(f"{path}: not a JSON secrets file ({e})") from None
    names = [f.name for f in fields(StackSecrets)]
    missing = [n for n in names if not stored.get(n) and not os.environ.get(ENV_PREFIX + n.upper())]
    if missing:
        raise SecretsError(f"{path}: missing {', '.join(missing)}")
    unknown = sorted(set(stored) - set(names))
    if unknown:
        raise SecretsError(f"{path}: unknown keys {', '.join(unknown)}")
    values = {n: os.environ.get(ENV_PREFIX + n.upper()) or stored[n] for n in names}
    if ":" not in values["prefect_auth"]:
        raise SecretsError(f"{path}: prefect_auth must be 'user:password'")
    for n in ("mlflow_admin_password", "mlflow_writer_password", "mlflow_reader_password"):
        if len(values[n]) < 12:
            raise SecretsError(f"{path}: {n} must have 12 characters at least (MLflow's rule)")
    return StackSecrets(**values)


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` readable by its owner only (created 0600, never wider)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
