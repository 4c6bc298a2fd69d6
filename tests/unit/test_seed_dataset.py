"""Seeds from datasets: GSM8K- and MATH-shaped data written here in Parquet, JSON and
save_to_disk forms, read through `datasets` offline, mapped, checked row by row like seed files,
confined to the data folders and fingerprinted by content."""

from __future__ import annotations

import dataclasses
import os
import shutil

import pytest
from datasets import Dataset, DatasetDict

from tasks import store
from tasks.config import FlywheelConfig
from tasks.domains import DOMAINS, eval_suite
from tasks.lineage import generation_lineage
from tasks.outputs import load_generation
from tasks.seed_dataset import (
    DatasetSpec,
    boxed_answer,
    difficulty_value,
    gsm8k_answer,
    plain_answer,
    read_seed_dataset,
)
from tasks.seedfile import Reason, SeedFileError

# GSM8K's shape: the worked solution ends with `#### <answer>` (thousands with commas).
GSM8K = [
    {
        "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as "
        "many clips in May. How many clips did Natalia sell altogether in April and May?",
        "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
        "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72",
    },
    {
        "question": "A shop sells 1,000 pens a day for 2 days and 234 on the third. "
        "How many pens does it sell?",
        "answer": "1,000 * 2 = <<1000*2=2000>>2,000\n2,000 - 766 = 1,234\n#### 1,234",
    },
    {
        "question": "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes "
        "of babysitting. How much did she earn?",
        "answer": "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\n#### 10",
    },
]
# MATH's shape: `problem`, `solution` with the answer in the last \boxed{}, `level`, `type`.
MATH = [
    {
        "problem": "What is $\\frac{1}{4}+\\frac{1}{4}$?",
        "solution": "We add: $\\frac{1}{4}+\\frac{1}{4}=\\boxed{\\frac{1}{2}}$.",
        "level": "Level 1",
        "type": "Prealgebra",
    },
    {
        "problem": "Find the set of roots of $x^2=x$.",
        "solution": "Either $x=0$ or $x=1$, so the set is $\\boxed{\\{0,1\\}}$.",
        "level": "Level 3",
        "type": "Algebra",
    },
    {
        "problem": "Compute $\\sqrt{8}$.",
        "solution": "First $\\boxed{8}$ is not it; $\\sqrt{8}=\\boxed{2\\sqrt{2}}$.",
        "level": "Level 5",
        "type": "Algebra",
    },
]
MATH_COLUMNS = {"question": "problem", "answer": "solution", "difficulty": "level"}


def spec(path, **kw) -> DatasetSpec:
    return DatasetSpec(str(path), **kw)


def read(s: DatasetSpec, data, **kw):
    kw.setdefault("domain", "math")
    kw.setdefault("data_dirs", [data])
    return read_seed_dataset(s, **kw)


@pytest.fixture
def data(tmp_path, monkeypatch):
    """A data folder, and `datasets`' cache in the test's own folder (relative paths as a user
    writes them resolve from the test's folder)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    return tmp_path / "data"


def cached(**kw) -> dict:
    return {"cache_dir": "cache", **kw}


# -- answers and difficulties ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "text,expected",
    [
        ("24 + 48 = 72\n#### 72", "72"),
        ("#### 1,234,567", "1234567"),
        ("first #### 3\nthen #### -5 ", "-5"),
        ("no marker 72", Reason("answer has no '#### <value>' line (answer_format: gsm8k)")),
        ("#### ", Reason("answer has nothing after its last '####' (answer_format: gsm8k)")),
    ],
)
def test_gsm8k_answer_is_the_value_after_the_last_marker(text, expected):
    got = gsm8k_answer(text)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("so $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
        ("$\\boxed{3}$ then $\\boxed{\\{1,2\\}}$", "\\{1,2\\}"),
        ("$\\boxed{\\left\\{ x \\right\\}}$", "\\left\\{ x \\right\\}"),
        ("nested $\\boxed{\\sqrt{\\frac{a}{b}}}$", "\\sqrt{\\frac{a}{b}}"),
        ("$\\fbox{7}$", "7"),
        ("the answer is $\\boxed 5$.", "5"),
        ("no box here", "answer has no \\boxed{...}"),
        ("$\\boxed{\\frac{1}{2}$", "answer's last \\boxed{ has unbalanced braces"),
        ("$\\boxed{ }$", "answer's last \\boxed{} is empty"),
    ],
)
def test_boxed_answer_is_the_last_balanced_box(text, expected):
    got = boxed_answer(text)
    if isinstance(got, Reason):
        assert got.startswith(expected)
    else:
        assert got == expected


def test_plain_answers_and_difficulties_as_columns_hold_them():
    assert [plain_answer(v) for v in ("7/12", 72, 72.0, 2.5, None)] == ["7/12", 72, 72, "2.5", None]
    assert [difficulty_value(v) for v in (3, 3.0, "3", "Level 3", "level 5 ", "Level ?")] == [
        3,
        3,
        3,
        3,
        5,
        "Level ?",
    ]
    assert isinstance(gsm8k_answer(72), Reason) and isinstance(boxed_answer(None), Reason)


# -- reading ------------------------------------------------------------------------------------
def test_gsm8k_reads_alike_from_parquet_json_csv_save_to_disk_and_a_folder(data):
    ds = Dataset.from_list(GSM8K)
    ds.to_parquet(data / "gsm8k.parquet")
    ds.to_json(data / "gsm8k.jsonl")
    ds.to_csv(data / "gsm8k.csv", index=False)
    ds.save_to_disk(data / "saved")
    DatasetDict({"train": ds, "test": ds.select([0])}).save_to_disk(data / "saved_dict")
    (data / "folder").mkdir()
    ds.to_parquet(data / "folder" / "train.parquet")
    sources = [
        spec("parquet", data_files="data/gsm8k.parquet", **cached()),
        spec("json", data_files=["data/gsm8k.jsonl"], **cached()),
        spec("csv", data_files={"train": "data/gsm8k.csv"}, **cached()),
        spec(data / "saved"),
        spec(data / "saved_dict"),
        spec("data/folder", **cached()),
    ]
    reports = [read(s.__class__(**{**s.__dict__, "answer_format": "gsm8k"}), data) for s in sources]
    got = [[(x.id, x.question, x.answer, x.difficulty, x.origin) for x in r.seeds] for r in reports]
    assert all(g == got[0] for g in got)
    assert [x[2] for x in got[0]] == ["72", "1234", "10"]
    assert {x[4] for x in got[0]} == {"dataset"}
    parquet, jsonl, csv, saved, saved_dict, folder = (r.source for r in reports)
    # The same Parquet bytes, named as a builder's data file or as a folder: one hash.
    assert parquet["hash"] == folder["hash"]
    assert parquet["files"] == {"gsm8k.parquet": parquet["files"]["gsm8k.parquet"]}
    assert len({parquet["hash"], jsonl["hash"], csv["hash"], saved["hash"]}) == 4
    assert saved["fingerprint"] == Dataset.load_from_disk(data / "saved")._fingerprint
    assert saved_dict["files"] and all(
        k.startswith("saved_dict/train/") for k in saved_dict["files"]
    )
    assert parquet["rows"] == 3 and parquet["columns"] == {
        "question": "question",
        "answer": "answer",
    }


def test_math_rows_map_levels_and_boxed_answers_and_bad_rows_name_the_row(data):
    rows = MATH + [
        {"problem": "Odd level.", "solution": "$\\boxed{3}$", "level": "Level ?", "type": "x"},
        {"problem": "No box.", "solution": "It is 3.", "level": "Level 2", "type": "x"},
        {"problem": "Words.", "solution": "$\\boxed{\\text{}}$", "level": "Level 2", "type": "x"},
    ]
    Dataset.from_list(rows).to_parquet(data / "math.parquet")
    s = spec(
        "parquet",
        data_files="data/math.parquet",
        columns=MATH_COLUMNS,
        answer_format="boxed",
        **cached(),
    )
    with pytest.raises(SeedFileError) as e:
        read(s, data)
    assert str(e.value) == (
        "parquet [train] row 3: field 'difficulty' must be a positive integer, got 'Level ?' "
        "(seeds.on_bad_row: fail)"
    )
    rep = read(s, data, on_bad_row="skip")
    assert [(x.answer, x.difficulty) for x in rep.seeds] == [
        ("\\frac{1}{2}", 1),
        ("\\{0,1\\}", 3),
        ("2\\sqrt{2}", 5),
    ]
    assert [(b.line, b.reason.split(" (")[0]) for b in rep.bad] == [
        (3, "field 'difficulty' must be a positive integer, got 'Level ?'"),
        (4, "answer has no \\boxed{...}"),
        (5, "gold answer '\\\\text{}' does not parse as math"),
    ]
    assert str(rep.bad[1]).startswith("parquet [train] row 4: answer has no \\boxed")


def test_a_missing_column_split_or_config_is_named_with_what_the_dataset_has(data):
    Dataset.from_list(MATH).to_parquet(data / "math.parquet")
    base = dict(data_files="data/math.parquet", answer_format="boxed", **cached())
    with pytest.raises(SeedFileError) as e:
        read(spec("parquet", columns={"question": "problem", "answer": "answer"}, **base), data)
    assert str(e.value) == (
        "parquet [train]: seeds.dataset.columns.answer is 'answer', a column the dataset lacks; "
        "its columns are ['problem', 'solution', 'level', 'type']"
    )
    with pytest.raises(SeedFileError, match=r"columns.id is 'uid', a column the dataset lacks"):
        read(spec("parquet", columns={**MATH_COLUMNS, "id": "uid"}, **base), data)
    with pytest.raises(
        SeedFileError, match=r"parquet \[test\]: no split 'test'; it has \['train'\]"
    ):
        read(spec("parquet", split="test", columns=MATH_COLUMNS, **base), data)
    (data / "math").mkdir()
    Dataset.from_list(MATH).to_parquet(data / "math" / "train.parquet")
    with pytest.raises(
        SeedFileError, match=r"data/math \(main\) \[train\]: cannot load the dataset .*'main'"
    ):
        read(spec("data/math", config="main", columns=MATH_COLUMNS, **cached()), data)
    with pytest.raises(SeedFileError, match="seeds.dataset.path is a file; name its format"):
        read(spec("data/math.parquet", **cached()), data)


def test_local_data_outside_the_data_folders_is_refused(data, tmp_path):
    Dataset.from_list(GSM8K).to_parquet(tmp_path / "out.parquet")
    Dataset.from_list(GSM8K).save_to_disk(tmp_path / "saved")
    (data / "sub").mkdir()
    os.symlink(tmp_path / "out.parquet", data / "sub" / "link.parquet")
    refused = [
        spec("parquet", data_files="out.parquet", **cached()),
        spec("parquet", data_files="data/../out.parquet", **cached()),
        spec("parquet", data_files="data/sub/*.parquet", **cached()),  # a glob, through a link
        spec(tmp_path / "saved"),
        spec("data/../saved"),
    ]
    for s in refused:
        with pytest.raises(SeedFileError, match="local data lies outside the allowed data"):
            read(s, data)
    # Refused before `datasets` prepared anything (the builder leaves only a lock file).
    assert not list((tmp_path / "cache").rglob("*.arrow"))


def test_the_fingerprint_follows_content_not_place_or_time(data, tmp_path):
    Dataset.from_list(GSM8K).to_parquet(data / "a.parquet")
    first = read(
        spec("parquet", data_files="data/a.parquet", answer_format="gsm8k", **cached()), data
    )
    (data / "copy").mkdir()
    shutil.copy(data / "a.parquet", data / "copy" / "a.parquet")
    os.utime(data / "copy" / "a.parquet", (1, 1))
    copy = read(
        spec("parquet", data_files="data/copy/a.parquet", answer_format="gsm8k", **cached()), data
    )
    assert copy.source["hash"] == first.source["hash"]
    other = read(
        spec(
            "parquet",
            data_files="data/a.parquet",
            answer_format="gsm8k",
            columns={"question": "question", "answer": "answer", "id": "question"},
            **cached(),
        ),
        data,
    )
    assert other.source["hash"] != first.source["hash"]  # the mapping is part of it
    Dataset.from_list(GSM8K[:2]).to_parquet(data / "copy" / "a.parquet")
    changed = read(
        spec("parquet", data_files="data/copy/a.parquet", answer_format="gsm8k", **cached()), data
    )
    assert changed.source["hash"] != first.source["hash"]


# -- the seeds stage ----------------------------------------------------------------------------
def _cfg(tmp_path, **dataset) -> FlywheelConfig:
    return FlywheelConfig(
        name="fw",
        domain="math",
        runs_dir=tmp_path / "runs",
        eval={"suite_size": 16, "k": 4},
        seeds={"dataset": dataset, "data_dirs": ["data"], "on_bad_row": "skip"},
    )


def test_seeds_stage_records_the_dataset_in_manifest_and_lineage_and_refuses_suites(data, tmp_path):
    from tasks.stages import check_seed_inputs, seeds_stage, suite_stage

    rows = MATH + [MATH[0]]  # an exact repeat: dropped and counted by the stage's dedup
    rows += [{"problem": "Bad.", "solution": "none", "level": "Level 1", "type": "x"}]
    Dataset.from_list(rows).save_to_disk(data / "math")
    cfg = _cfg(tmp_path, path="data/math", columns=MATH_COLUMNS, answer_format="boxed")
    folder = seeds_stage.fn(cfg, 1, suite_stage.fn(cfg))
    seeds = load_generation(folder.parent).seeds
    assert seeds.count == 3 and seeds.origins == {"dataset": 3}
    assert seeds.duplicates["exact"] == 1
    assert seeds.source["kind"] == "dataset" and seeds.source["path"] == "data/math"
    assert seeds.source["split"] == "train" and seeds.source["columns"] == MATH_COLUMNS
    assert seeds.source["fingerprint"] and len(seeds.source["hash"]) == 16
    assert store.read_parquet(folder / "bad_rows.parquet") == [
        {
            "dataset": "data/math [train]",
            "row": 4,
            "reason": "answer has no \\boxed{...} (answer_format: boxed)",
        }
    ]
    lineage = generation_lineage(_stub_rest(load_generation(folder.parent)), {})
    assert lineage["seeds"]["source"] == seeds.source

    suite = eval_suite(DOMAINS["math"], 16)
    Dataset.from_list(
        [{"problem": s.question, "solution": f"$\\boxed{{{s.answer}}}$"} for s in suite]
    ).to_json(data / "suite.jsonl")
    bad = _cfg(
        tmp_path / "b",
        path="json",
        data_files="data/suite.jsonl",
        columns={"question": "problem", "answer": "solution"},
        answer_format="boxed",
        cache_dir="cache",
    )
    with pytest.raises(SeedFileError, match="json: refused as a seed source: 16 of its 16 rows"):
        check_seed_inputs(bad)
    assert not (tmp_path / "b").exists()


def _stub_rest(gen):
    """`gen` with its later stages stood in: lineage reads only their records here."""
    from tasks.gate import GateDecision
    from tasks.outputs import (
        Champion,
        CurateOutputs,
        EvalOutputs,
        GateOutputs,
        GenerateOutputs,
        TrainOutputs,
    )

    decision = GateDecision(True, "pass@1", 0.1, 0.2, 0.1, 0.05, "ok")
    return dataclasses.replace(
        gen,
        generate=GenerateOutputs("m", {}, 1, "g"),
        curate=CurateOutputs({}, 1, 1.0, 1.0, "c"),
        train=TrainOutputs("m", 1),
        eval=EvalOutputs({"pass@1": 0.2}, "m", {}),
        gate=GateOutputs(decision, Champion("m", {}, 1), None),
    )


def test_file_and_dataset_are_exclusive():
    with pytest.raises(ValueError, match="file and dataset: give one seed source, not both"):
        FlywheelConfig(seeds={"file": "data/s.jsonl", "dataset": {"path": "parquet"}})
