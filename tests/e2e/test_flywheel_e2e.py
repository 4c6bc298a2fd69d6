"""`flywheel run` of the tiny config, end to end, in a subprocess; and its bad-input paths."""

import json
import random

import pytest

from tasks import store
from tasks.domains import DOMAINS, make_seeds
from tests.e2e.conftest import TINY, flywheel

pytestmark = pytest.mark.slow

STAGES = ("seeds", "generate", "curate", "train", "eval", "gate")


def test_two_generations_end_to_end(runs_dir, cli_env):
    r = flywheel(
        [
            "run",
            str(TINY),
            "--set",
            f"runs_dir={runs_dir}",
            "--set",
            "name=e2e",
            "--set",
            "gate.test=paired_bootstrap",
        ],
        cli_env,
        timeout=900,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "flywheel e2e" in r.stdout
    assert "promoted" in r.stdout or "kept champion" in r.stdout
    fw = runs_dir / "e2e"
    assert store.read_manifest(fw / "gen-0000" / "eval") is not None
    for g in (1, 2):
        gdir = store.gen_dir(fw, g)
        for stage in STAGES:
            assert store.read_manifest(gdir / stage, verify=True) is not None, (g, stage)
        seeds = store.read_manifest(gdir / "seeds").outputs["count"]
        samples = store.read_parquet(gdir / "generate" / "samples.parquet")
        assert len(samples) == seeds * 4
        assert len({s["id"] for s in samples}) == len(samples)
        assert (gdir / "train" / "model" / "model.safetensors").is_file()
        decision = json.loads((gdir / "gate" / "decision.json").read_text())
        assert decision["metric"] == "pass@1"
        assert decision["rule"] and decision["ci_low"] is not None
    # The second generation sampled from whatever the first gate chose.
    gate1 = store.read_manifest(fw / "gen-0001" / "gate").outputs
    gen2 = store.read_manifest(fw / "gen-0002" / "generate").outputs
    assert gen2["model"] == gate1["champion"]["model"]

    status = flywheel(
        ["status", str(TINY), "--set", f"runs_dir={runs_dir}", "--set", "name=e2e"],
        cli_env,
        timeout=300,
    )
    assert status.returncode == 0, status.stderr[-2000:]
    assert "FINISHED" in status.stdout

    lineage = json.loads((fw / "gen-0002" / "lineage.json").read_text())
    assert lineage["generator_model"] == gate1["champion"]["model"]
    assert (
        lineage["accepted"]["hash"]
        == store.read_manifest(fw / "gen-0002" / "curate").outputs["hash"]
    )
    shown = flywheel(
        ["lineage", str(TINY), "2", "--set", f"runs_dir={runs_dir}", "--set", "name=e2e"],
        cli_env,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert json.loads(shown.stdout)["generation"] == 2

    side = flywheel(
        ["compare", str(TINY), "--set", f"runs_dir={runs_dir}", "--set", "name=e2e"],
        cli_env,
        timeout=120,
    )
    assert side.returncode == 0, side.stderr[-2000:]
    header = next(line for line in side.stdout.splitlines() if "gen-0000" in line)
    assert "gen-0001" in header and "gen-0002" in header
    assert any(line.lstrip("│ ").startswith("pass@1 ") for line in side.stdout.splitlines())


def test_invalid_config_stops_before_any_work(tmp_path, cli_env):
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.read_text().replace("  n: 4", "  n: -1"))
    r = flywheel(["run", str(bad), "--set", f"runs_dir={tmp_path / 'runs'}"], cli_env, timeout=120)
    assert r.returncode == 2
    assert "sampling.n" in r.stderr and "greater than 0" in r.stderr and str(bad) in r.stderr
    assert not (tmp_path / "runs").exists()


def test_malformed_seed_file_names_line_and_keeps_completed_work(runs_dir, cli_env, tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text('{"question": "1+2", "answer": 3}\n{"question": "4+4" "answer": 8}\n')
    args = [
        "run",
        str(TINY),
        "--set",
        f"runs_dir={runs_dir}",
        "--set",
        "name=badseeds",
        "--set",
        f"seeds.file={seeds}",
    ]
    r = flywheel(args, cli_env, timeout=600)
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    assert f"{seeds}:2: not valid JSON" in r.stderr
    fw = runs_dir / "badseeds"
    before = {p: store.read_manifest(p).created for p in (fw / "suite", fw / "gen-0000" / "eval")}
    assert store.read_manifest(fw / "gen-0001" / "seeds") is None
    # Fixed file: the rerun resumes; completed stages are not redone.
    suite = store.read_parquet(fw / "suite" / "seeds.parquet")
    good = make_seeds(DOMAINS["arith"], 64, 1, random.Random(7), {s["question"] for s in suite})
    seeds.write_text(
        "".join(json.dumps({"question": s.question, "answer": s.answer}) + "\n" for s in good)
    )
    r = flywheel([*args, "--generations", "1"], cli_env, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert {p: store.read_manifest(p).created for p in before} == before
    assert store.read_manifest(fw / "gen-0001" / "seeds").outputs["count"] == 64
