"""Running the real `flywheel` CLI on the tiny config, as the end-to-end and fault tests do.

The fixtures that go with it (`runs_dir`: a worker's runs folder whose `models/` holds the tiny
base model made once per session; `cli_env`: the CLI's environment) are in `tests/conftest.py`.
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
TINY = ROOT / "configs" / "tiny.yaml"


def make_tiny_base_model(models: Path) -> None:
    """The tiny config's suite and base model, made the way `flywheel run` makes them (its
    stages), in a runs folder whose `models/` is `models`."""
    from tasks.config import load_config
    from tasks.stages import base_model_stage, suite_stage

    runs = models.parent / "e2e-warm"
    runs.mkdir(exist_ok=True)
    models.mkdir(exist_ok=True)
    if not (runs / "models").is_symlink():
        (runs / "models").symlink_to(models)
    cfg = load_config(TINY, runs_dir=str(runs), name="warm")
    base_model_stage.fn(cfg, suite_stage.fn(cfg))


def flywheel(args: list[str], env: dict, **kw) -> subprocess.CompletedProcess:
    """`flywheel ARGS` in a fresh process, from the repository root; its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        **kw,
    )
