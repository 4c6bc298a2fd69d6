"""SIGKILL `flywheel run` in the middle of a stage; the rerun finishes with nothing lost,
nothing redone and nothing duplicated."""

import os
import signal
import subprocess
import sys
import time

import pytest

from tasks import store
from tests.e2e.conftest import ROOT, TINY, flywheel

pytestmark = pytest.mark.slow


def _completed(fw):
    out = {}
    for man in fw.rglob("manifest.json"):
        m = store.read_manifest(man.parent)
        out[str(man.parent.relative_to(fw))] = (m.created, m.files)
    return out


def test_sigkill_mid_stage_then_resume(runs_dir, cli_env):
    fw = runs_dir / "killed"
    args = ["run", str(TINY), "--set", f"runs_dir={runs_dir}", "--set", "name=killed"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=ROOT,
        env=cli_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    # Wait until generation 2 is in the middle of a stage, then kill everything at once.
    gen2 = fw / "gen-0002"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if gen2.exists() and any(p.name.startswith(".tmp-") for p in gen2.iterdir()):
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed mid-stage"
    in_flight = [p.name for p in gen2.iterdir() if p.name.startswith(".tmp-")]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _completed(fw)
    assert "gen-0001/gate" in before
    stage = in_flight[0].split("-")[1]
    assert f"gen-0002/{stage}" not in before

    r = flywheel(args, cli_env, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    after = _completed(fw)
    for key, value in before.items():
        assert after[key] == value, f"{key} was redone or changed"
    assert not [p for p in fw.rglob(".tmp-*")]
    for g in (1, 2):
        gdir = store.gen_dir(fw, g)
        samples = store.read_parquet(gdir / "generate" / "samples.parquet")
        seeds = store.read_manifest(gdir / "seeds").outputs["count"]
        assert len(samples) == seeds * 4 == len({s["id"] for s in samples})
        accepted = store.read_parquet(gdir / "curate" / "accepted.parquet")
        assert len({a["id"] for a in accepted}) == len(accepted)
        assert {a["id"] for a in accepted} <= {s["id"] for s in samples}
