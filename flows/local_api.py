"""The Prefect API a run talks to, made ready before the flow starts.

Two cases, as Prefect itself decides them:

- `PREFECT_API_URL` is set (a `prefect server start` on this machine, or a team's server): it
  must answer its health check now, else the run stops with what to do.
- It is not: Prefect starts a temporary local server in a subprocess on the first API call and
  gives it `PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS` to answer, 20 s by default. A
  loaded 2-core laptop misses that (the server imports, migrates its SQLite database and
  starts uvicorn while other processes hold the cores), and the run died before any work.
  So the server is started here, once, with `DEFAULT_STARTUP_S` when the user has set no
  budget of their own (environment, profile or `prefect.toml`: Prefect's settings say which);
  the flow's own client then finds it running. Prefect counts only its polling sleeps against
  the budget, so on a busy machine the wait in wall time is longer still.

A start that still fails raises `ApiUnavailable`, whose message says how to raise the budget or
how to run against a server started once (`prefect server start` + `PREFECT_API_URL`).
"""

from __future__ import annotations

from pathlib import Path

BUDGET_VAR = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
DEFAULT_STARTUP_S = 300
"""The local server's start-up budget when the user sets none: it starts in a few seconds on an
idle core; 300 s covers a laptop whose cores are all taken."""


class ApiUnavailable(RuntimeError):
    """The Prefect API the run needs did not start or does not answer; the message says why
    and what to do."""


def startup_budget(configured: int, user_set: bool) -> int:
    """The local server's start-up budget in seconds: the user's own setting where they made
    one, else `DEFAULT_STARTUP_S` (never less than Prefect's default)."""
    return configured if user_set else max(configured, DEFAULT_STARTUP_S)


def not_started_message(budget: int, user_set: bool, cause: str) -> str:
    """What a failed start of the local server tells the user."""
    source = "as set" if user_set else "the flywheel's default"
    cause = cause.split(" stdout:", 1)[0].strip()  # Prefect appends the empty pipes' text
    return (
        f"Prefect's local API did not start within {budget} s ({BUDGET_VAR}, {source}): "
        f"{cause}\n"
        "A busy machine can need longer. Either give it more time:\n"
        f"  {BUDGET_VAR}={max(4 * budget, 600)} flywheel run ...\n"
        "or start a Prefect server once and point runs at it:\n"
        "  prefect server start          # in another terminal; it stays up\n"
        "  export PREFECT_API_URL=http://127.0.0.1:4200/api"
    )


def unreachable_message(url: str, cause: str) -> str:
    """What a configured server that does not answer tells the user."""
    return (
        f"The Prefect API at {url} (PREFECT_API_URL) does not answer: {cause}\n"
        "Start it (`prefect server start` on that machine) or unset PREFECT_API_URL to run on "
        "a temporary local API."
    )


def make_home(home: Path) -> None:
    """Create Prefect's home folder, parents included. Prefect creates only the last level: under
    a missing parent its local database cannot open, and its server retried for the whole
    start-up budget on a busy core (300 s) before the run stopped without naming the cause."""
    try:
        home.expanduser().mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ApiUnavailable(
            f"PREFECT_HOME {home}: cannot create it ({e.strerror}); Prefect's local API keeps its "
            "database there. Point PREFECT_HOME at a folder you can write."
        ) from None


def ensure_api() -> str:
    """Make sure the Prefect API this process will use answers, starting the local one with
    its start-up budget where none is configured; return its URL. Raises `ApiUnavailable`."""
    from prefect.client.orchestration import get_client
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if url := settings.api.url:
        with get_client(sync_client=True) as client:
            error = client.api_healthcheck()
        if error is not None:
            raise ApiUnavailable(unreachable_message(url, f"{type(error).__name__}: {error}"))
        return url
    ephemeral = settings.server.ephemeral
    if not ephemeral.enabled:
        raise ApiUnavailable(
            "No Prefect API: PREFECT_API_URL is not set and the local temporary API is turned "
            "off (PREFECT_SERVER_ALLOW_EPHEMERAL_MODE). Set one of them."
        )
    user_set = "startup_timeout_seconds" in ephemeral.model_fields_set
    budget = startup_budget(ephemeral.startup_timeout_seconds, user_set)
    make_home(settings.home)
    # Imported only here: Prefect's server package costs ~1.6 CPU-s to import, which a run against
    # a configured server does not need.
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the instance Prefect's clients use (one per process)
    try:
        server.start(timeout=budget)
    except RuntimeError as e:
        server.stop()  # do not leave a half-started server behind
        raise ApiUnavailable(not_started_message(budget, user_set, str(e))) from None
    return server.api_url
