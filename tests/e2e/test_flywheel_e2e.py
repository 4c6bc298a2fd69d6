"""`flywheel run` of the tiny config, end to end, in a subprocess; and its bad-input paths."""

import hashlib
import json
import random

import pytest

from tasks import store
from tasks.domains import DOMAINS, eval_suite, make_seeds
from tasks.outputs import STAGES
from tests.runs import TINY, flywheel

pytestmark = pytest.mark.slow


def test_two_generations_end_to_end(runs_dir, shell_env):
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
        shell_env,
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
        assert decision["guards"]["suite.level2"]["limit"] == 0.5  # the extra guard suite
        suites = store.read_manifest(gdir / "eval").outputs["suites"]
        assert suites["level2"]["items"] == 16
    # The second generation sampled from whatever the first gate chose.
    gate1 = store.read_manifest(fw / "gen-0001" / "gate").outputs
    gen2 = store.read_manifest(fw / "gen-0002" / "generate").outputs
    assert gen2["model"] == gate1["champion"]["model"]

    status = flywheel(
        ["status", str(TINY), "--set", f"runs_dir={runs_dir}", "--set", "name=e2e"],
        shell_env,
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
        shell_env,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert json.loads(shown.stdout)["generation"] == 2

    side = flywheel(
        ["compare", str(TINY), "--set", f"runs_dir={runs_dir}", "--set", "name=e2e"],
        shell_env,
        timeout=120,
    )
    assert side.returncode == 0, side.stderr[-2000:]
    header = next(line for line in side.stdout.splitlines() if "metric" in line)
    assert "gen-0000" in header and "gen-0001" in header and "gen-0002" in header
    assert any(line.lstrip("│ ").startswith("pass@1 ") for line in side.stdout.splitlines())


def test_invalid_config_stops_before_any_work(tmp_path, cli_env):
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.read_text().replace("  n: 4", "  n: -1"))
    r = flywheel(["run", str(bad), "--set", f"runs_dir={tmp_path / 'runs'}"], cli_env, timeout=120)
    assert r.returncode == 2
    assert "sampling.n" in r.stderr and "greater than 0" in r.stderr and str(bad) in r.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "name,data,message",
    [
        (
            "seeds.jsonl",
            b'{"question": "1+2", "answer": 3}\n{"question": "4+4" "answer": 8}\n',
            ":2: not valid JSON",
        ),
        (
            "seeds.csv",
            b"question,answer\n1+2,3\n\xff+1,5\n",
            ":3: field 'question' is not valid UTF-8",
        ),
        (
            "../outside.jsonl",
            b'{"question": "1+2", "answer": 3}\n',
            "outside the allowed data folders",
        ),
    ],
)
def test_bad_seed_file_stops_before_any_folder(cli_env, tmp_path, name, data, message):
    (tmp_path / "data").mkdir()
    seeds = tmp_path / "data" / name
    seeds.write_bytes(data)
    runs = tmp_path / "runs"
    args = ["run", str(TINY), "--set", f"runs_dir={runs}", "--set", f"seeds.file={seeds}"]
    r = flywheel([*args, "--set", f"seeds.data_dirs=[{tmp_path / 'data'}]"], cli_env, timeout=300)
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    assert message in r.stderr and str(seeds) in r.stderr.replace("\n", "")
    assert not runs.exists()  # no base model, no generation folder, nothing to clean up


def test_dataset_seeds_run_a_generation(runs_dir, cli_env, tmp_path):
    """Generation 1 seeded from a Parquet dataset read through `datasets`: a bad row skipped
    and named by row index, a leaked eval item dropped, the source recorded in the seeds
    manifest, the lineage and MLflow's dataset source."""
    from datasets import Dataset
    from mlflow import MlflowClient

    from tasks.tracking import default_tracking_uri

    data = tmp_path / "data"
    data.mkdir()
    items = eval_suite(DOMAINS["arith"], 32)
    suite = [s.question for s in items]
    good = make_seeds(DOMAINS["arith"], 64, 1, random.Random(7), set(suite))
    bad_row = {"problem": "1+1", "solution": "3"}
    # A valid arith row (its gold is its value) that holds an eval item: not an exact match,
    # so only the n-gram check drops it.
    leaked = {"problem": f"{suite[1]}+0", "solution": items[1].answer}
    rows = [bad_row, leaked] + [{"problem": s.question, "solution": s.answer} for s in good]
    Dataset.from_list(rows).to_parquet(data / "train.parquet")
    sets = {
        "runs_dir": runs_dir,
        "name": "dataseeds",
        "seeds.dataset.path": "parquet",
        "seeds.dataset.data_files": data / "train.parquet",
        "seeds.dataset.columns": "{question: problem, answer: solution}",
        "seeds.dataset.cache_dir": tmp_path / "cache",
        "seeds.data_dirs": f"[{data}]",
        "seeds.on_bad_row": "skip",
    }
    args = ["run", str(TINY), *(x for k, v in sets.items() for x in ("--set", f"{k}={v}"))]
    r = flywheel([*args, "--generations", "1"], cli_env, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    gen = runs_dir / "dataseeds" / "gen-0001"
    man = store.read_manifest(gen / "seeds").outputs
    assert man["count"] == 64 and man["bad_rows"] == 1 and man["origins"] == {"dataset": 64}
    assert man["decontaminated"] == {"exact": 0, "ngram": 1}
    assert store.read_parquet(gen / "seeds" / "bad_rows.parquet") == [
        {
            "dataset": "parquet [train]",
            "row": 0,
            "reason": "gold answer '3' differs from the question's value 2",
        }
    ]
    source = man["source"]
    assert source["kind"] == "dataset" and source["files"] == {
        "train.parquet": hashlib.sha256((data / "train.parquet").read_bytes()).hexdigest()
    }
    assert json.loads((gen / "lineage.json").read_text())["seeds"]["source"] == source
    client = MlflowClient(default_tracking_uri(runs_dir))
    exp = client.get_experiment_by_name("dataseeds")
    (run,) = client.search_runs([exp.experiment_id], "tags.`flywheel.role` = 'generation'")
    (inp,) = [i for i in run.inputs.dataset_inputs if i.dataset.name == "seeds-gen-0001"]
    assert inp.dataset.source_type == "hugging_face"
    assert json.loads(inp.dataset.source)["data_files"] == str(data / "train.parquet")
    assert {t.key: t.value for t in inp.tags}["flywheel.source_hash"] == source["hash"]
