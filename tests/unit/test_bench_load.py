"""The load benchmark's error count: each kind of lock or database failure is counted by what
its driver prints, and ordinary run output counts nothing."""

import pytest

from bench.bench_load import count_errors


@pytest.mark.parametrize(
    "text,want",
    [
        (
            "sqlite3.OperationalError: database is locked",
            {"sqlite_locked": 1, "operational_error": 1},
        ),
        (
            'psycopg.errors.UniqueViolation: duplicate key value violates unique constraint "x"',
            {"integrity_error": 2},
        ),
        ("ERROR:  deadlock detected", {"deadlock": 1}),
        ("QueuePool limit of size 5 overflow 10 reached", {"pool_exhausted": 1}),
        ("httpx.ConnectError: [Errno 111] Connection refused", {"api_unreachable": 2}),
        ("503 Service Unavailable", {"http_5xx": 1}),
        ("TimeoutError: pool timed out", {"db_timeout": 1}),
        ("│ 1289 │   except TimeoutError as exc:", {}),
        ("KeyError: '_MLFLOW_TELEMETRY_SESSION_ID'", {"mlflow_environ_race": 1}),
        ("Task run 'gen-0001/curate' - Finished in state Completed()", {}),
    ],
)
def test_lock_and_database_errors_are_counted_by_kind(text, want):
    assert count_errors(text) == want
