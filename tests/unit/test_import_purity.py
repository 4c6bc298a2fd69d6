"""Pure modules stay pure: importing a decision module, or the config, starts nothing heavy.

Each import runs in a fresh interpreter, so what another test (or another module) loaded
cannot hide a heavy import, and the module list it reports is exactly what the import pulls in.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Orchestration, tracking, engines, training and columnar I/O: what decisions never need.
# numpy is allowed (the gate's statistics and the hygiene's hashing use it).
HEAVY = ("prefect", "mlflow", "torch", "vllm", "ray", "pyarrow", "transformers")

# The project's modules that start processes, load models or write stage folders.
WORKERS = (
    "tasks.generate",
    "tasks.backends",
    "tasks.backend_ray",
    "tasks.judge_run",
    "tasks.judge_bootstrap",
    "tasks.bootstrap",
    "tasks.reward_model",
    "tasks.train",
    "tasks.trainers",
    "tasks.stages",
    "tasks.store",
    "tasks.subproc",
    "tasks.tracking",
    "tasks.plots",
    "tasks.train_rm",
    "flows",
)

DECISIONS = [
    "tasks.curate",
    "tasks.gate",
    "tasks.metrics",
    "tasks.seeds",
    "tasks.hygiene",
    "tasks.judge",
    "tasks.rewards",
    "tasks.lineage",
    "tasks.outputs",
    "tasks.projections",
    "tasks.records",
    "tasks.domains",
    "tasks.prompts",
    "tasks.requests",
    "tasks.faults",
    "tasks.preference",
    "tasks.rationalize",
]


def loaded_by(module: str) -> set[str]:
    """The modules a fresh interpreter holds after `import module`."""
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return set(json.loads(out.stdout))


def under(names: set[str], roots: tuple[str, ...]) -> list[str]:
    """The `roots` that `names` holds, themselves or through a submodule."""
    return [r for r in roots if any(n == r or n.startswith(r + ".") for n in names)]


def test_the_watched_modules_exist():
    """A renamed worker or decision module must be renamed here too, or the checks go blind."""
    names = [*WORKERS, *(p if isinstance(p, str) else p.values[0] for p in DECISIONS)]
    assert [n for n in names if importlib.util.find_spec(n) is None] == []


@pytest.mark.parametrize("module", DECISIONS)
def test_decision_module_loads_nothing_heavy(module):
    loaded = loaded_by(module)
    assert module in loaded
    assert under(loaded, HEAVY) == [], f"{module} loads a heavy library"
    assert under(loaded, WORKERS) == [], f"{module} loads a worker module"


def test_the_config_loads_no_worker_and_nothing_heavy():
    """The flow's parameter type is read by the CLI, Prefect and every stage: it validates
    with pydantic alone."""
    loaded = loaded_by("tasks.config")
    assert under(loaded, WORKERS) == []
    assert under(loaded, HEAVY) == []


def test_only_the_stages_take_the_config_whole():
    """Below the stages, components take plain values or a request built from the config
    (`tasks.requests`), so no other module under tasks/ imports `tasks.config`."""
    allowed = {ROOT / "tasks" / f for f in ("requests_generation.py", "requests_training.py")}
    readers = []
    for path in sorted((ROOT / "tasks").rglob("*.py")):
        if path in allowed or (ROOT / "tasks" / "stages") in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            if "tasks.config" in names:
                readers.append(str(path.relative_to(ROOT)))
    assert readers == []
