"""Seed files are untrusted: every bad row is reported with file, line and reason."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.domains import DOMAINS, eval_suite
from tasks.hygiene import exact_key
from tasks.seedfile import SeedFileError, looks_like_suite, read_seed_file

ROWS = [
    {"id": "a", "question": "1+2", "answer": "3", "difficulty": 1},
    {"id": "b", "question": "4-1+7", "answer": "10", "difficulty": 2},
]


def write(folder, name, data):
    p = folder / name
    p.write_bytes(data if isinstance(data, bytes) else data.encode())
    return p


def jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def read(p, **kw):
    kw.setdefault("data_dirs", [p.parent])
    return read_seed_file(p, **kw)


def test_one_schema_for_jsonl_parquet_csv(tmp_path):
    j = write(tmp_path, "s.jsonl", jsonl(ROWS))
    c = write(tmp_path, "s.csv", "id,question,answer,difficulty\na,1+2,3,1\nb,4-1+7,10,2\n")
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "s.parquet")
    got = [read(p).seeds for p in (j, c, tmp_path / "s.parquet")]
    assert got[0] == got[1] == got[2]
    assert [(s.id, s.question, s.answer, s.difficulty, s.origin) for s in got[0]] == [
        ("a", "1+2", "3", 1, "file"),
        ("b", "4-1+7", "10", 2, "file"),
    ]


def test_optional_fields_default(tmp_path):
    p = write(
        tmp_path,
        "s.jsonl",
        '{"question": " 1+2 ", "answer": 3}\n\n{"question": "5", "answer": null}\n',
    )
    seeds = read(p).seeds
    assert [(s.question, s.answer, s.difficulty) for s in seeds] == [
        ("1+2", "3", 1),
        ("5", None, 1),
    ]
    assert seeds[0].id != seeds[1].id


BIG = "1+" * 5_000_000 + "1"  # a 10 MB prompt


@pytest.mark.parametrize(
    "data,message",
    [
        ('{"question": "1+2", "answer": 3}\n{bad json\n', ":2: not valid JSON"),
        ('{"answer": 3}\n', ":1: field 'question' must be a non-empty string"),
        ('{"question": "  ", "answer": 3}\n', ":1: field 'question' must be a non-empty string"),
        (
            '{"question": 12, "answer": 3}\n',
            ":1: field 'question' must be a non-empty string, got 12",
        ),
        ('{"question": "1+2"}\n', ":1: missing field 'answer'"),
        ("[1, 2]\n", ":1: expected an object"),
        ('"1+2"\n', ":1: expected an object"),
        ('{"question": "1+2", "answer": [3]}\n', ":1: field 'answer' must be"),
        ('{"question": "1+2", "answer": true}\n', ":1: field 'answer' must be"),
        ('{"question": "1+2", "answer": 3.5}\n', ":1: field 'answer' must be"),
        ('{"question": "1", "answer": 1, "difficulty": 0}\n', ":1: field 'difficulty'"),
        ('{"question": "1", "answer": 1, "difficulty": "2"}\n', ":1: field 'difficulty'"),
        ('{"question": "1", "answer": 1, "id": [1]}\n', ":1: field 'id'"),
        ('{"question": "1", "answer": 1, "extra": 1}\n', ":1: unknown field(s) ['extra']"),
        (
            '{"id": "a", "question": "1", "answer": 1}\n'
            '{"id": "a", "question": "2", "answer": 2}\n',
            ":2: duplicate seed id 'a' (first on line 1)",
        ),
        (
            b'{"question": "1+2", "answer": 3}\n{"question": "4\xff\xfe+1", "answer": 5}\n',
            ":2: field 'question' is not valid UTF-8",
        ),
        (
            json.dumps({"question": BIG, "answer": 1}) + "\n",
            ":1: line is 10000030 bytes, over the cap of 33792",
        ),
        (
            json.dumps({"question": "1+" * 3000 + "1", "answer": 1}) + "\n",
            ":1: field 'question' has 6001 characters, over the cap of 4096",
        ),
    ],
)
def test_bad_jsonl_rows_name_file_line_reason(tmp_path, data, message):
    p = write(tmp_path, "seeds.jsonl", data)
    with pytest.raises(SeedFileError) as e:
        read(p)
    assert str(e.value).startswith(f"{p}:") and message in str(e.value), str(e.value)
    assert "seeds.on_bad_row: fail" in str(e.value)


@pytest.mark.parametrize(
    "data,message",
    [
        (
            "id,question,answer,difficulty\na,1+2,3,x\n",
            ":2: field 'difficulty' must be a positive integer, got 'x'",
        ),
        ("question,answer\n1+2,3\n4+4\n", ":3: 1 cells for 2 columns"),
        (b"question,answer\n1+2,3\n\xc3\x28+1,5\n", ":3: field 'question' is not valid UTF-8"),
        ("question\n1+2\n", "CSV header lacks column(s) ['answer']"),
        ("question,answer\n" + BIG + ",1\n", ":2: not valid CSV (field larger than field limit"),
    ],
)
def test_bad_csv_rows(tmp_path, data, message):
    p = write(tmp_path, "seeds.csv", data)
    with pytest.raises(SeedFileError) as e:
        read(p)
    assert str(e.value).startswith(f"{p}:") and message in str(e.value), str(e.value)


def test_bad_parquet_types(tmp_path):
    p = tmp_path / "s.parquet"
    pq.write_table(pa.table({"question": ["1+2", "3+4"], "answer": [3.0, 7.5]}), p)
    with pytest.raises(SeedFileError, match=r"s.parquet:1: field 'answer' must be a string"):
        read(p)
    q = write(tmp_path, "t.parquet", b"PAR1 not really")
    with pytest.raises(SeedFileError, match="not a readable Parquet file"):
        read(q)


@pytest.mark.parametrize(
    "name,data",
    [("e.jsonl", ""), ("b.jsonl", "\n \n"), ("e.csv", ""), ("h.csv", "question,answer\n")],
)
def test_empty_files_are_refused(tmp_path, name, data):
    p = write(tmp_path, name, data)
    with pytest.raises(SeedFileError, match=f"{p}: the seed file has no usable seeds"):
        read(p)


def test_skip_policy_keeps_good_rows_and_reports_bad(tmp_path):
    text = jsonl(ROWS[:1]) + "{oops\n" + '{"question": "", "answer": 1}\n' + jsonl(ROWS[1:])
    p = write(tmp_path, "s.jsonl", text)
    rep = read(p, on_bad_row="skip")
    assert [s.id for s in rep.seeds] == ["a", "b"]
    assert [(b.line, b.reason.split(" (")[0]) for b in rep.bad] == [
        (2, "not valid JSON"),
        (3, "field 'question' must be a non-empty string, got ''"),
    ]
    assert (
        str(rep.bad[0])
        == f"{p}:2: not valid JSON (Expecting property name enclosed in double quotes)"
    )
    only_bad = write(tmp_path, "bad.jsonl", "{oops\n")
    with pytest.raises(
        SeedFileError, match=r"no usable seeds; 1 bad row\(s\), first: .*bad.jsonl:1"
    ):
        read(only_bad, on_bad_row="skip")


def test_paths_outside_data_dirs_are_refused(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    outside = write(tmp_path, "s.jsonl", jsonl(ROWS))
    inside = write(data, "s.jsonl", jsonl(ROWS))
    assert len(read_seed_file(inside, data_dirs=[data]).seeds) == 2
    for path in (outside, data / ".." / "s.jsonl", data / "sub" / ".." / ".." / "s.jsonl"):
        with pytest.raises(SeedFileError, match="outside the allowed data folders"):
            read_seed_file(path, data_dirs=[data])
    link = data / "link.jsonl"
    link.symlink_to(outside)
    with pytest.raises(SeedFileError, match="outside the allowed data folders"):
        read_seed_file(link, data_dirs=[data])
    with pytest.raises(SeedFileError, match="no such seed file"):
        read_seed_file(data / "nope.jsonl", data_dirs=[data])
    with pytest.raises(SeedFileError, match="unknown seed file format '.txt'"):
        read_seed_file(write(data, "s.txt", "x"), data_dirs=[data])


def test_eval_suite_files_are_recognised(tmp_path):
    suite = eval_suite(DOMAINS["arith"], 64)
    keys = {exact_key(s.question) for s in suite}
    suite_dir = tmp_path / "fw" / "suite"
    suite_dir.mkdir(parents=True)
    p = suite_dir / "seeds.parquet"
    pq.write_table(
        pa.Table.from_pylist([{"question": s.question, "answer": s.answer} for s in suite]), p
    )
    seeds = read(p).seeds
    assert "frozen eval suite" in looks_like_suite(p, seeds, keys, exact_key, 0.5)
    copy = write(
        tmp_path,
        "copy.jsonl",
        jsonl([{"question": s.question + " ", "answer": s.answer} for s in suite]),
    )
    assert "64 of its 64 rows are eval-suite items" in looks_like_suite(
        copy, read(copy).seeds, keys, exact_key, 0.5
    )
    mixed = write(
        tmp_path,
        "mixed.jsonl",
        jsonl(ROWS + [{"question": suite[0].question, "answer": suite[0].answer}]),
    )
    assert looks_like_suite(mixed, read(mixed).seeds, keys, exact_key, 0.5) is None


def test_run_preflight_refuses_bad_files_before_any_folder(tmp_path):
    from tasks.config import FlywheelConfig
    from tasks.stages import check_seed_inputs

    data = tmp_path / "data"
    data.mkdir()
    suite = eval_suite(DOMAINS["arith"], 32)

    def cfg(path, **seeds):
        return FlywheelConfig.model_validate(
            {
                "runs_dir": str(tmp_path / "runs"),
                "eval": {"suite_size": 32},
                "seeds": {"file": str(path), "data_dirs": [str(data)], **seeds},
            }
        )

    cases = {
        write(data, "bad.jsonl", jsonl(ROWS) + "{x\n"): ":3: not valid JSON",
        write(
            data,
            "suite.jsonl",
            jsonl([{"question": s.question, "answer": s.answer} for s in suite]),
        ): "refused as a seed source: 32 of its 32 rows are eval-suite items",
        write(tmp_path, "out.jsonl", jsonl(ROWS)): "outside the allowed data folders",
        data / ".." / "out.jsonl": "outside the allowed data folders",
        write(data, "empty.csv", ""): "no usable seeds",
    }
    for path, message in cases.items():
        with pytest.raises(SeedFileError, match=message.replace("(", r"\(")):
            check_seed_inputs(cfg(path))
    assert not (tmp_path / "runs").exists()
    check_seed_inputs(cfg(data / "bad.jsonl", on_bad_row="skip"))  # skip: the run may go on
