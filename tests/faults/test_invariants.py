"""The invariant checker fails on a folder broken in each way it guards against, and passes on
a sound one (a hand-made generation written through `tasks.store`, so no model runs)."""

import json
import shutil
from pathlib import Path

import pytest

from tasks import store
from tasks.gate import GateDecision
from tasks.records import Sample, to_rows
from tests.faults.invariants import assert_invariants, snapshot

PARAMS = {"n": 2, "temperature": 1.0, "top_p": 1.0, "max_tokens": 8, "seed": 0}


def _samples() -> list[Sample]:
    out = []
    for seed in ("s1", "s2"):
        for i in range(2):
            out.append(
                Sample(
                    Sample.make_id(1, seed, i, "base", PARAMS),
                    seed,
                    f"Q {seed}",
                    f"answer {seed} {i}",
                    "1",
                    1,
                    i,
                    "base",
                    3,
                    "stop",
                )
            )
    return out


# sample index -> (outcome, reason, kept, accuracy score)
VERDICTS = [
    ("accept", "all_rewards_passed", True, 1.0),
    ("reject", "accuracy:wrong_answer", False, 0.0),
    ("accept", "all_rewards_passed", True, 1.0),
    ("infra_error", "accuracy:verifier_crashed", False, None),
]


def _decision(promote: bool) -> dict:
    return GateDecision(promote, "pass@1", 0.1, 0.2, 0.1, 0.0, "better").to_dict()


def _champion(gen: int, fw: Path) -> dict:
    model = str(fw / f"gen-{gen:04d}" / "train" / "model") if gen else "base"
    return {
        "model": model,
        "report": {"pass@1": 0.2},
        "generation": gen,
        "version": str(gen) if gen else None,
    }


def make_flywheel(fw: Path, promote: bool = True) -> Path:
    """gen-0000's eval and one full generation of 2 seeds x n=2."""
    with store.write_stage(fw / "gen-0000" / "eval", "eval") as (tmp, out):
        store.write_parquet([{"x": 1}], tmp / "items.parquet")
        out.update(report={"pass@1": 0.1}, model="base", params=PARAMS)
    g = fw / "gen-0001"
    with store.write_stage(g / "seeds", "seeds") as (tmp, out):
        store.write_parquet([{"id": "s1"}, {"id": "s2"}], tmp / "seeds.parquet")
        out.update(count=2, difficulty=1.0, hash="h")
    samples = _samples()
    with store.write_stage(g / "generate", "generate") as (tmp, out):
        store.write_parquet(to_rows(samples), tmp / "samples.parquet")
        out.update(
            model="base",
            params=PARAMS,
            samples=4,
            hash="g",
            sources=[{"model": "base", "template": "plain", "errors": 0}],
        )
    rows = [
        {
            "sample_id": s.id,
            "seed_id": s.seed_id,
            "outcome": o,
            "reason": r,
            "kept": k,
            "reward_accuracy": a,
        }
        for s, (o, r, k, a) in zip(samples, VERDICTS, strict=True)
    ]
    with store.write_stage(g / "curate", "curate") as (tmp, out):
        store.write_parquet(rows, tmp / "verdicts.parquet")
        store.write_parquet(to_rows([samples[0], samples[2]]), tmp / "accepted.parquet")
        out.update(
            counts={"accept": 2, "reject": 1, "infra_error": 1},
            accepted=2,
            accept_rate=0.5,
            seed_solve_rate=1.0,
            hash="c",
        )
    with store.write_stage(g / "train", "train") as (tmp, out):
        (tmp / "model").mkdir()
        (tmp / "model" / "config.json").write_text("{}")
        out.update(base_model="base", train_rows=2, hash="t")
    with store.write_stage(g / "eval", "eval") as (tmp, out):
        store.write_parquet([{"x": 2}], tmp / "items.parquet")
        out.update(report={"pass@1": 0.2}, model=str(g / "train" / "model"), params=PARAMS)
    with store.write_stage(g / "gate", "gate") as (tmp, out):
        out.update(
            decision=_decision(promote),
            champion=_champion(int(promote), fw),
            challenger_version="1",
        )
    return fw


def _rewrite(folder: Path, name: str, rows: list[dict] | None = None, **outputs) -> None:
    """Replace a landed stage's file and/or outputs, its manifest made to match (so only the
    invariant under test is broken)."""
    if rows is not None:
        store.write_parquet(rows, folder / name)
    man = json.loads((folder / store.MANIFEST).read_text())
    man["outputs"].update(outputs)
    if rows is not None:
        man["files"][name] = {
            "bytes": (folder / name).stat().st_size,
            "sha256": store.sha256_file(folder / name),
            "rows": len(rows),
        }
    (folder / store.MANIFEST).write_text(json.dumps(man))


@pytest.fixture
def fw(tmp_path) -> Path:
    return make_flywheel(tmp_path / "fw")


def test_a_sound_folder_passes(fw, tmp_path):
    gens = assert_invariants(fw, before=snapshot(fw), reference=make_flywheel(tmp_path / "b"))
    assert [g.number for g in gens] == [0, 1]
    assert_invariants(make_flywheel(tmp_path / "kept", promote=False))


def _drop_sample(fw):
    g = fw / "gen-0001" / "generate"
    _rewrite(g, "samples.parquet", store.read_parquet(g / "samples.parquet")[:3], samples=3)


def _drop_verdict(fw):
    c = fw / "gen-0001" / "curate"
    _rewrite(c, "verdicts.parquet", store.read_parquet(c / "verdicts.parquet")[:3])


def _miscount(fw):
    _rewrite(fw / "gen-0001" / "curate", "", counts={"accept": 2, "reject": 1})


def _duplicate_id(fw):
    g = fw / "gen-0001" / "generate"
    rows = store.read_parquet(g / "samples.parquet")
    rows[1]["id"] = rows[0]["id"]
    _rewrite(g, "samples.parquet", rows)


def _duplicate_content(fw):
    c = fw / "gen-0001" / "curate"
    rows = store.read_parquet(c / "accepted.parquet")
    rows[1] = {**rows[1], "prompt": rows[0]["prompt"], "completion": rows[0]["completion"] + " "}
    _rewrite(c, "accepted.parquet", rows)


def _infra_as_reject(fw):
    c = fw / "gen-0001" / "curate"
    rows = store.read_parquet(c / "verdicts.parquet")
    rows[3]["outcome"] = "reject"
    _rewrite(c, "verdicts.parquet", rows, counts={"accept": 2, "reject": 2})


def _infra_kept(fw):
    c = fw / "gen-0001" / "curate"
    rows = store.read_parquet(c / "verdicts.parquet")
    rows[3]["kept"] = True
    _rewrite(c, "verdicts.parquet", rows)


def _partial_model(fw):
    (fw / "gen-0001" / "train" / "model" / "config.json").write_text('{"half": ')


def _promoted_without_gate(fw):
    _rewrite(fw / "gen-0001" / "gate", "", decision=_decision(False))


def _champion_without_eval(fw):
    shutil.rmtree(fw / "gen-0001" / "eval")


def _leftover_tmp(fw):
    (fw / "gen-0001" / ".tmp-train-0123abcd").mkdir()


def _folder_without_manifest(fw):
    (fw / "gen-0001" / "evolve").mkdir()


BROKEN = {
    "sample lost": (_drop_sample, "3 samples"),
    "verdict lost": (_drop_verdict, "3 rows for 4 samples"),
    "verdict counts short": (_miscount, "= 3, but generate made 4"),
    "duplicate sample id": (_duplicate_id, "twice"),
    "duplicate accepted content": (_duplicate_content, "duplicates the content"),
    "infra error counted as reject": (_infra_as_reject, "no reward scored it 0"),
    "infra error kept": (_infra_kept, "infra_error sample"),
    "partial model promoted": (_partial_model, "config.json: changed"),
    "champion its gate refused": (_promoted_without_gate, "did not promote"),
    "champion without eval": (_champion_without_eval, "eval has not landed"),
    "temporary folder left": (_leftover_tmp, "temporary folder"),
    "stage folder without manifest": (_folder_without_manifest, "no manifest"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_each_broken_folder_fails(fw, case):
    breaks, message = BROKEN[case]
    breaks(fw)
    with pytest.raises(AssertionError, match=message):
        assert_invariants(fw)


def test_a_crashed_folder_may_keep_its_temporary_folder(fw):
    _leftover_tmp(fw)
    assert_invariants(fw, finished=False)


def test_a_redone_stage_fails(fw):
    before = snapshot(fw)
    man = json.loads((fw / "gen-0001" / "train" / store.MANIFEST).read_text())
    man["created"] += 1
    (fw / "gen-0001" / "train" / store.MANIFEST).write_text(json.dumps(man))
    with pytest.raises(AssertionError, match="gen-0001/train: redone"):
        assert_invariants(fw, before=before)


def test_a_run_that_differs_from_the_uninterrupted_one_fails(fw, tmp_path):
    ref = make_flywheel(tmp_path / "ref")
    c = fw / "gen-0001" / "curate"
    rows = store.read_parquet(c / "accepted.parquet")
    rows[1]["completion"] = "another answer"
    _rewrite(c, "accepted.parquet", rows)
    assert_invariants(fw)
    with pytest.raises(AssertionError, match="gen-0001/curate: differs .* accepted.parquet"):
        assert_invariants(fw, reference=ref)


def test_a_generation_registered_twice_fails(fw, tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    client.create_registered_model("fw")
    for _ in range(2):  # the same generation registered again, as a resume must never do
        client.create_model_version("fw", "file:///nowhere", tags={"flywheel.generation": "1"})
    client.set_registered_model_alias("fw", "champion", "1")
    with pytest.raises(AssertionError, match="generation 1 registered 2 times"):
        assert_invariants(fw, tracking_uri=uri, registered_model="fw")
    client.delete_model_version("fw", "2")
    assert_invariants(fw, tracking_uri=uri, registered_model="fw")
