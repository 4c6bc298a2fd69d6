"""The fault hook: silent unless `FLYWHEEL_FAULTS` names the point, then fires once, on the
hit it names."""

from __future__ import annotations

import errno
import subprocess
import sys

import pytest

from tasks import faults


@pytest.fixture(autouse=True)
def _fresh_counts():
    faults._hits.clear()
    yield
    faults._hits.clear()


def test_nothing_happens_without_the_variable(monkeypatch):
    monkeypatch.delenv(faults.ENV, raising=False)
    assert [faults.fault("train.step") for _ in range(3)] == [None, None, None]


def test_an_action_word_fires_once_on_the_named_hit(monkeypatch):
    monkeypatch.setenv(faults.ENV, "train.step@3=nan, judge.reply=garbage")
    assert [faults.fault("train.step") for _ in range(5)] == [None, None, "nan", None, None]
    assert faults.fault("judge.reply") == "garbage"
    assert faults.fault("other.point") is None


def test_enospc_and_raise(monkeypatch):
    monkeypatch.setenv(faults.ENV, "store.write=enospc,curate.batch=raise")
    with pytest.raises(OSError) as err:
        faults.fault("store.write")
    assert err.value.errno == errno.ENOSPC
    with pytest.raises(faults.FaultInjected, match="curate.batch"):
        faults.fault("curate.batch")


@pytest.mark.parametrize("spec", ["train.step", "=nan", "train.step@0=nan", "a@x=nan"])
def test_a_malformed_spec_is_named(monkeypatch, spec):
    monkeypatch.setenv(faults.ENV, spec)
    with pytest.raises(ValueError, match="FLYWHEEL_FAULTS"):
        faults.fault("train.step")


@pytest.mark.parametrize(("action", "code"), [("sigkill", -9), ("exit", 70)])
def test_process_ending_actions(action, code):
    script = "from tasks.faults import fault; fault('p'); print('survived')"
    env = {"FLYWHEEL_FAULTS": f"p={action}", "PATH": ""}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert out.returncode == code and "survived" not in out.stdout


def test_once_folder_fires_a_point_once_across_processes(monkeypatch, tmp_path):
    monkeypatch.setenv(faults.ENV, "generate.batch=garbage")
    monkeypatch.setenv(faults.ONCE_ENV, str(tmp_path / "fired"))
    assert faults.fault("generate.batch") == "garbage"
    faults._hits.clear()  # a fresh process (a stage's retry) counts from zero ...
    assert faults.fault("generate.batch") is None  # ... but the point has fired already
    assert (tmp_path / "fired" / "generate.batch").is_file()
