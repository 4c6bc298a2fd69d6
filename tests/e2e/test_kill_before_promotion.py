"""SIGKILL the run after the challenger is registered and before the gate moves `champion`:
the alias stays where the last completed gate put it, and the rerun finishes the decision."""

import subprocess
import sys

import pytest

from tasks import store
from tests.runs import ROOT, TINY, flywheel

pytestmark = pytest.mark.slow

# The real CLI, with the generation-2 gate replaced by a SIGKILL of the whole process: the
# moment between `register` + `challenger` alias and the gate's promotion.
KILL_AT_GATE = """
import os, signal, sys
import flows.flywheel as fw
real_gate = fw.gate_stage
def gate_then_die(cfg, generation, *args, **kwargs):
    if generation == 2:  # the whole process group: the CLI and the workers it started
        os.killpg(os.getpgid(0), signal.SIGKILL)
    return real_gate(cfg, generation, *args, **kwargs)
fw.gate_stage = gate_then_die
from flows.cli import main
sys.argv = ["flywheel", *sys.argv[1:]]
main()
"""


def _aliases(runs_dir, name):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{runs_dir}/mlflow.db")
    return {k: str(v) for k, v in client.get_registered_model(name).aliases.items()}


def test_kill_between_registration_and_promotion_leaves_champion(runs_dir, cli_env):
    args = ["run", str(TINY), "--set", f"runs_dir={runs_dir}", "--set", "name=unpromoted"]
    proc = subprocess.run(
        [sys.executable, "-c", KILL_AT_GATE, *args],
        cwd=ROOT,
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=900,
        start_new_session=True,
    )
    assert proc.returncode == -9, proc.stdout[-2000:] + proc.stderr[-2000:]
    fw = runs_dir / "unpromoted"
    gate1 = store.read_manifest(fw / "gen-0001" / "gate").outputs
    assert store.read_manifest(fw / "gen-0002" / "gate") is None
    aliases = _aliases(runs_dir, "unpromoted")
    assert aliases["challenger"] == "2"  # registered before the kill
    # champion is where gate 1 left it: version 1 if promoted, else never set (the base model)
    assert aliases.get("champion") == gate1["champion"].get("version")

    r = flywheel(args, cli_env, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    gate2 = store.read_manifest(fw / "gen-0002" / "gate").outputs
    assert _aliases(runs_dir, "unpromoted").get("champion") == gate2["champion"].get("version")
    from mlflow import MlflowClient

    versions = MlflowClient(f"sqlite:///{runs_dir}/mlflow.db").search_model_versions(
        "name='unpromoted'"
    )
    assert sorted(int(v.version) for v in versions) == [1, 2]  # nothing registered twice

    # Someone moves the alias by hand (here: promotes version 2, whatever the gate said); the
    # next generation starts from `models:/unpromoted@champion`, not from the gate's choice.
    client = MlflowClient(f"sqlite:///{runs_dir}/mlflow.db")
    client.set_registered_model_alias("unpromoted", "champion", "2")
    r = flywheel([*args, "--more", "1"], cli_env, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    gen3 = store.read_manifest(fw / "gen-0003" / "generate").outputs
    assert gen3["model"] == str(fw / "gen-0002" / "train" / "model")
