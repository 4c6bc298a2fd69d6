"""`flywheel run` when the Prefect API is not there in time: a message saying what to do, no
traceback, nothing written."""

from __future__ import annotations

from tests.runs import TINY, flywheel


def test_a_local_api_that_misses_its_startup_budget_stops_the_run_with_what_to_do(
    tmp_path, shell_env
):
    env = {**shell_env, "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "1"}
    runs = tmp_path / "runs"
    r = flywheel(["run", str(TINY), "--set", f"runs_dir={runs}"], env, timeout=300)
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    text = " ".join(r.stderr.split())  # rich wraps long lines
    assert "local API did not start within 1 s" in text
    assert "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, as set" in text
    assert "prefect server start" in text and "export PREFECT_API_URL=" in text
    assert "Traceback" not in r.stderr
    assert not runs.exists()
