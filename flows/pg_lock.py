"""The run lock on a team's PostgreSQL: a session-level advisory lock per flywheel name.

Runs of one flywheel may start on different machines of a team (a CLI run here, a scheduled run
on a worker there), where a lock file guards only its own machine. With `FLYWHEEL_LOCK_URL` set
to a PostgreSQL database (`flywheel stack` prints it; any database of the server will do) the
run lock becomes `pg_advisory_lock` on one connection held for the whole run. PostgreSQL drops a
session's advisory locks when the session ends, and the session ends when its client process
dies: a SIGKILLed or OOM-killed holder's socket is closed by its kernel and the server frees the
lock at once; a holder whose machine vanishes is noticed by TCP keepalives (about a minute).

The key is the pair (`NAMESPACE`, a 32-bit hash of the flywheel's name): the name is what a team
shares (it names the MLflow experiment and registered model too), and the namespace keeps the
flywheel's keys apart from any other advisory locks on the same database.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
from collections.abc import Iterator

LOCK_URL_ENV = "FLYWHEEL_LOCK_URL"
NAMESPACE = 0x464C5957  # "FLYW"


def lock_key(name: str) -> int:
    """A flywheel name's advisory-lock key: 32 bits of its BLAKE2b hash, signed (int4)."""
    digest = hashlib.blake2b(name.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


def libpq_url(url: str) -> str:
    """A SQLAlchemy-style URL (`postgresql+asyncpg://...`) as libpq takes it (`postgresql://`)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.split("+", 1)[0] not in ("postgresql", "postgres"):
        raise ValueError(f"{LOCK_URL_ENV}: not a PostgreSQL URL: {redact(url)}")
    return f"postgresql://{rest}"


def redact(url: str) -> str:
    """`url` without the password of its user part (for messages)."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


@contextlib.contextmanager
def advisory_lock(url: str, name: str, log: logging.Logger | None = None) -> Iterator[None]:
    """Hold flywheel `name`'s advisory lock on the database at `url`, waiting while another
    session holds it. Raises RuntimeError naming `FLYWHEEL_LOCK_URL` when the database cannot be
    reached."""
    import psycopg

    key = lock_key(name)
    try:
        conn = psycopg.connect(
            libpq_url(url),
            autocommit=True,
            application_name=f"flywheel run lock: {name}"[:63],
            connect_timeout=30,
            # A holder whose machine disappears (no FIN, no RST) is found dead by keepalives.
            keepalives=1,
            keepalives_idle=30,
            keepalives_interval=10,
            keepalives_count=3,
        )
    except psycopg.Error as e:
        raise RuntimeError(
            f"run lock: cannot connect to {LOCK_URL_ENV}={redact(url)}: {str(e).strip()}"
        ) from None
    with conn:
        (got,) = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (NAMESPACE, key)).fetchone()
        if not got:
            if log:
                log.warning("another run of %s is active (%s); waiting for it", name, redact(url))
            conn.execute("SELECT pg_advisory_lock(%s, %s)", (NAMESPACE, key))
        try:
            yield
        finally:
            with contextlib.suppress(psycopg.Error):  # a lost session has released it already
                conn.execute("SELECT pg_advisory_unlock(%s, %s)", (NAMESPACE, key))
