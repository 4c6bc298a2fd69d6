"""The fault tests that run `flywheel run` use the end-to-end tests' runs folder (its tiny base
model made once per session) and CLI environment."""

from tests.e2e.conftest import cli_env, runs_dir  # noqa: F401 (fixtures)
