"""The local Prefect API's start-up budget and what a failed start tells the user."""

from __future__ import annotations

import pytest

from flows.local_api import (
    BUDGET_VAR,
    DEFAULT_STARTUP_S,
    ApiUnavailable,
    make_home,
    not_started_message,
    startup_budget,
    unreachable_message,
)


@pytest.mark.parametrize(
    ("configured", "user_set", "budget"),
    [
        (20, False, DEFAULT_STARTUP_S),  # Prefect's 20 s default: too short for a busy laptop
        (20, True, 20),  # the user's own choice stands, even when short
        (5, True, 5),
        (900, True, 900),
        (900, False, 900),  # a default above ours (a future Prefect) is not lowered
    ],
)
def test_the_budget_is_the_users_else_a_generous_default(configured, user_set, budget):
    assert startup_budget(configured, user_set) == budget


def test_a_failed_start_says_how_to_raise_the_budget_or_use_a_server():
    cause = (
        "Timed out while attempting to connect to ephemeral Prefect API server. "
        "stdout: None stderr: None"
    )
    text = not_started_message(300, False, cause)
    assert text.startswith(f"Prefect's local API did not start within 300 s ({BUDGET_VAR}")
    assert "the flywheel's default" in text and "Timed out while attempting" in text
    assert "stdout" not in text  # Prefect's empty pipe dump is dropped
    assert f"{BUDGET_VAR}=1200 flywheel run" in text  # a budget that is actually larger
    assert "prefect server start" in text and "PREFECT_API_URL=http://127.0.0.1:4200/api" in text
    assert "as set" in not_started_message(20, True, cause)
    assert f"{BUDGET_VAR}=600 " in not_started_message(20, True, cause)


def test_a_configured_server_that_does_not_answer_is_named():
    text = unreachable_message("http://127.0.0.1:9/api", "ConnectError: refused")
    assert "http://127.0.0.1:9/api (PREFECT_API_URL) does not answer: ConnectError" in text
    assert "unset PREFECT_API_URL" in text


def test_prefect_home_is_made_with_its_parents_or_named(tmp_path):
    home = tmp_path / "missing" / "parent" / "prefect"
    make_home(home)
    assert home.is_dir()
    (tmp_path / "file").write_text("")
    with pytest.raises(ApiUnavailable, match=r"PREFECT_HOME .*/file/prefect: cannot create it"):
        make_home(tmp_path / "file" / "prefect")


def test_a_run_against_a_configured_server_does_not_import_prefects_server(tmp_path):
    """`ensure_api` with PREFECT_API_URL set checks the server's health and imports none of
    Prefect's server package (~1.6 CPU-s, ~3 CPU-s per run measured), which only the temporary
    local API needs."""
    import os
    import subprocess
    import sys
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from tests.http_reply import reply

    class Health(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            reply(self, 200 if self.path == "/api/health" else 404, b"true")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/api"
    code = (
        "import sys; from flows.local_api import ensure_api; print(ensure_api()); "
        "print(sorted(m for m in sys.modules if m.startswith('prefect.server')))"
    )
    env = {**os.environ, "PREFECT_API_URL": url, "PREFECT_HOME": str(tmp_path / "home")}
    try:
        r = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
        )
    finally:
        server.shutdown()
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split("\n")[:2] == [url, "[]"]
