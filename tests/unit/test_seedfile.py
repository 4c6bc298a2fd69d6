"""Seed files are untrusted: every bad row is reported with file, line and reason."""

import hashlib
import json
import os
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.domains import DOMAINS, eval_suite
from tasks.hygiene import exact_key
from tasks.seedfile import (
    SeedFileError,
    looks_like_suite,
    open_beneath,
    read_seed_file,
    validate_row,
)

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
    kw.setdefault("domain", "arith")
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
            ":2: seed id 'a' is given to two different contents (question '2' here, '1' on "
            "line 1; answer '2' here, '1' on line 1)",
        ),
        (
            '{"question": "1+2", "answer": 3}\n{"question": "1+2", "answer": 3, "difficulty": 2}\n',
            ":2: the same question has two different contents (difficulty 2 here, 1 on line 1)",
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


def test_files_as_spreadsheets_and_windows_editors_write_them(tmp_path):
    """A UTF-8 byte-order mark and CRLF line endings read like plain UTF-8 with LF."""
    bom = b"\xef\xbb\xbf"
    j = write(tmp_path, "s.jsonl", bom + jsonl(ROWS).replace("\n", "\r\n").encode())
    c = write(
        tmp_path, "s.csv", bom + b"id,question,answer,difficulty\r\na,1+2,3,1\r\nb,4-1+7,10,2\r\n"
    )
    assert read(j).seeds == read(c).seeds == read(write(tmp_path, "p.jsonl", jsonl(ROWS))).seeds
    assert read(j).source["sha256"] != read(c).source["sha256"]  # of the bytes as they were
    bad = write(tmp_path, "b.jsonl", bom + b'{"question": "1+2", "answer": 3}\r\n{x\r\n')
    with pytest.raises(SeedFileError, match=r"b.jsonl:2: not valid JSON"):
        read(bad)


def test_exact_repeats_pass_to_the_stage_dedup_and_a_conflicting_id_stops(tmp_path):
    from tasks.config import FlywheelConfig
    from tasks.stages import seeds_stage, suite_stage

    data = tmp_path / "data"
    data.mkdir()
    rows = [{"question": "1+2", "answer": "3"}, ROWS[1], {"question": "1+2", "answer": "3"}]
    p = write(data, "s.jsonl", jsonl(rows + [ROWS[1]]))
    assert [s.question for s in read(p).seeds] == ["1+2", "4-1+7", "1+2", "4-1+7"]
    cfg = FlywheelConfig(
        runs_dir=tmp_path / "runs",
        eval={"suite_size": 16},
        seeds={"file": str(p), "data_dirs": [str(data)]},
    )
    folder = seeds_stage.fn(cfg, 1, suite_stage.fn(cfg))
    man = json.loads((folder / "manifest.json").read_text())["outputs"]
    assert man["count"] == 2 and man["duplicates"]["exact"] == 2
    assert man["source"] == {
        "kind": "file",
        "path": str(p),
        "format": "jsonl",
        "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
    }
    conflict = write(data, "c.jsonl", jsonl(rows + [{**ROWS[1], "difficulty": 3}]))
    with pytest.raises(SeedFileError, match=r"c.jsonl:4: seed id 'b' is given to two different"):
        read(conflict)


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
    assert len(read(inside, data_dirs=[data]).seeds) == 2
    for path in (outside, data / ".." / "s.jsonl", data / "sub" / ".." / ".." / "s.jsonl"):
        with pytest.raises(SeedFileError, match="outside the allowed data folders"):
            read(path, data_dirs=[data])
    link = data / "link.jsonl"
    link.symlink_to(outside)
    with pytest.raises(SeedFileError, match="outside the allowed data folders"):
        read(link, data_dirs=[data])
    with pytest.raises(SeedFileError, match="no such seed file"):
        read(data / "nope.jsonl", data_dirs=[data])
    with pytest.raises(SeedFileError, match="unknown seed file format '.txt'"):
        read(write(data, "s.txt", "x"), data_dirs=[data])


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


# -- numbers and nesting the parsers refuse: a bad row, never a crash -----------------------------
HUGE = "9" * 5000  # over Python's 4300-digit int <-> str conversion limit


@pytest.mark.parametrize(
    "data,message",
    [
        ('{"question": "1+2", "answer": ' + HUGE + "}\n", ":1: a number has more digits than"),
        ('{"question": "1+2", "answer": 3, "id": ' + HUGE + "}\n", ":1: a number has more"),
        ('{"question": "1", "answer": 1, "difficulty": ' + HUGE + "}\n", ":1: a number has"),
        ('{"question": "1+2", "answer": "' + HUGE + '"}\n', ":1: gold answer has 5000 digits"),
        ('{"question": "' + HUGE + '", "answer": null}\n', ":1: question has a 5000-digit"),
        ('{"question": "1", "answer": 1, "id": "' + 2 * HUGE + '"}\n', ":1: field 'id' has 10000"),
        ("[" * 16000 + "]" * 16000 + "\n", ":1: JSON nested too deeply to parse"),
        ('{"question": "1", "answer": ' + "[" * 16000 + "]" * 16000 + "}\n", ":1: JSON nested"),
    ],
)
def test_huge_numbers_and_deep_nesting_are_bad_rows(tmp_path, data, message):
    p = write(tmp_path, "s.jsonl", data)
    with pytest.raises(SeedFileError) as e:
        read(p, max_chars=6000)  # a cap above the lengths, so the parsers and checks see them
    assert str(e.value).startswith(f"{p}:") and message in str(e.value), str(e.value)
    skipped = write(tmp_path, "k.jsonl", jsonl(ROWS[:1]) + data)
    rep = read(skipped, on_bad_row="skip", max_chars=6000)
    assert [s.id for s in rep.seeds] == ["a"] and [b.line for b in rep.bad] == [2]


def test_huge_csv_difficulty_is_a_bad_row(tmp_path):
    p = write(tmp_path, "s.csv", f"question,answer,difficulty\n1+2,3,{HUGE}\n")
    with pytest.raises(SeedFileError, match=r"s.csv:2: field 'difficulty' must be a positive"):
        read(p)


def test_validate_row_survives_integers_python_will_not_print():
    big = 10**5000
    assert validate_row({"question": "1", "answer": big}, 4096).startswith(
        "field 'answer' is an integer with more digits than Python converts"
    )
    assert validate_row({"question": "1", "answer": 1, "id": big}, 4096).startswith(
        "field 'id' is an integer with more digits"
    )
    assert validate_row({"question": "1", "answer": 1, "difficulty": -big}, 4096) == (
        "field 'difficulty' must be a positive integer, got an integer longer than Python "
        f"converts ({sys.get_int_max_str_digits()} digits)"
    )


# -- rows checked against the flywheel's domain ---------------------------------------------------
GSM8K = {
    "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as "
    "many clips in May. How many clips did Natalia sell altogether in April and May?",
    "answer": "72",
}


@pytest.mark.parametrize(
    "row,message",
    [
        (GSM8K, ":2: question is not an arith expression (digits, + - * and parentheses): 'N'"),
        (
            {"question": "1+2", "answer": 4},
            ":2: gold answer '4' differs from the question's value 3",
        ),
        ({"question": "1+2", "answer": "3.0"}, ":2: gold answer '3.0' is not an integer"),
    ],
)
def test_arith_rows_must_be_arith_problems_with_their_value(tmp_path, row, message):
    p = write(tmp_path, "s.jsonl", jsonl([ROWS[0], row, ROWS[1]]))
    with pytest.raises(SeedFileError) as e:
        read(p)
    assert str(e.value).startswith(f"{p}:") and message in str(e.value), str(e.value)
    rep = read(p, on_bad_row="skip")
    assert [s.id for s in rep.seeds] == ["a", "b"] and [b.line for b in rep.bad] == [2]


def test_math_rows_need_a_gold_answer_math_verify_parses(tmp_path):
    good = [
        GSM8K,
        {"question": "1/2+1/3", "answer": "\\frac{5}{6}"},
        {"question": "x?", "answer": None},
    ]
    p = write(tmp_path, "m.jsonl", jsonl(good))
    assert [s.answer for s in read(p, domain="math").seeds] == ["72", "\\frac{5}{6}", None]
    bad = write(tmp_path, "b.jsonl", jsonl([*good, {"question": "Solve", "answer": "\\frac{"}]))
    with pytest.raises(SeedFileError, match=r"b.jsonl:4: gold answer '\\\\frac\{' does not parse"):
        read(bad, domain="math")
    with pytest.raises(ValueError, match="domain 'chess' has no seed-file check"):
        read(p, domain="chess")


def test_run_preflight_refuses_a_word_problem_in_an_arith_flywheel(tmp_path):
    """The flow's first call names file:line before any folder is made; the same file is fine
    for the math domain, whose verifier grades word problems."""
    from tasks.config import FlywheelConfig
    from tasks.stages import check_seed_inputs

    data = tmp_path / "data"
    data.mkdir()
    p = write(data, "gsm.jsonl", jsonl([GSM8K]))

    def cfg(domain):
        return FlywheelConfig.model_validate(
            {
                "domain": domain,
                "runs_dir": str(tmp_path / "runs"),
                "eval": {"suite_size": 32},
                "seeds": {"file": str(p), "data_dirs": [str(data)]},
            }
        )

    with pytest.raises(SeedFileError, match=f"{p}:1: question is not an arith expression"):
        check_seed_inputs(cfg("arith"))
    assert not (tmp_path / "runs").exists()
    check_seed_inputs(cfg("math"))


# -- the file read is the file checked -------------------------------------------------------------
def test_a_link_swapped_in_after_the_check_is_not_followed(tmp_path, monkeypatch):
    """Between the path check and the read, `data/sub` becomes a link to a folder outside."""
    import tasks.seedfile as seedfile

    data, outside = tmp_path / "data", tmp_path / "outside"
    (data / "sub").mkdir(parents=True)
    outside.mkdir()
    p = write(data / "sub", "s.jsonl", jsonl(ROWS))
    write(outside, "s.jsonl", jsonl([{"id": "secret", "question": "6+6", "answer": 12}]))
    checked = seedfile.resolve_seed_path

    def check_then_swap(path, data_dirs):
        real = checked(path, data_dirs)
        (data / "sub").rename(data / "old")
        (data / "sub").symlink_to(outside, target_is_directory=True)
        return real

    monkeypatch.setattr(seedfile, "resolve_seed_path", check_then_swap)
    with pytest.raises(SeedFileError, match=f"{p}: .*data/sub is a symbolic link"):
        read(p, data_dirs=[data])


def test_open_beneath_follows_no_link_and_opens_only_regular_files(tmp_path):
    root = tmp_path / "root"
    (root / "dir").mkdir(parents=True)
    f = write(root / "dir", "s.jsonl", "ok\n")
    fd = open_beneath(f, [root])
    with os.fdopen(fd, "rb") as fh:
        assert fh.read() == b"ok\n"
    (root / "alias").symlink_to(root / "dir", target_is_directory=True)  # a link inside the root
    (root / "dir" / "link.jsonl").symlink_to(f)
    os.mkfifo(root / "fifo.jsonl")  # opening it for reading must not wait for a writer
    cases = {
        root / "alias" / "s.jsonl": "alias is a symbolic link",
        root / "dir" / "link.jsonl": "link.jsonl is a symbolic link",
        root / "fifo.jsonl": "is not a regular file",
        root / "dir": "is not a regular file",
        root: "is a folder, not a seed file",
        root / "dir" / "none.jsonl": "no such seed file",
        tmp_path / "x.jsonl": "lies outside the allowed folders",
    }
    for path, message in cases.items():
        with pytest.raises(SeedFileError, match=message):
            open_beneath(path, [root])


def test_a_link_inside_the_data_folder_is_read_by_its_target(tmp_path):
    """The path is resolved when checked, so a link that stays inside the folder still works;
    the report names the file that was read."""
    data = tmp_path / "data"
    (data / "v2").mkdir(parents=True)
    target = write(data / "v2", "seeds.jsonl", jsonl(ROWS))
    (data / "current").symlink_to(data / "v2", target_is_directory=True)
    rep = read(data / "current" / "seeds.jsonl", data_dirs=[data])
    assert [s.id for s in rep.seeds] == ["a", "b"] and rep.path == target.resolve()
