"""User seed files: untrusted input, read row by row into `Seed`s. Pure apart from reading the file.

One schema for every format (JSONL, Parquet, CSV):

    question    non-empty string, at most `max_chars` characters        (required)
    answer      string, integer or null (CSV: empty cell)                (required column)
    id          string; default: a hash of the question                  (optional)
    difficulty  positive integer; default 1                              (optional)

Every row is checked on its own and a bad one is reported as `file:line: reason` (Parquet and
CSV: the row's line as a reader would count it). The policy decides what a bad row does: `fail`
stops at the first one, `skip` drops it and keeps the report. Whole-file faults (a path outside
the configured data folders, a missing or empty file, an eval-suite file) always stop.

Departure from a plain loader: bytes are decoded with `surrogateescape`, so a row with invalid
UTF-8 is reported on its own line instead of aborting the whole file at the first bad byte, and
an oversized line is refused by its byte length before it is parsed.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tasks.records import Seed, stable_hash

FORMATS = (".jsonl", ".parquet", ".csv")
COLUMNS = ("id", "question", "answer", "difficulty")
_BAD_BYTES = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of invalid UTF-8


class _Reason(str):
    """What a reader yields instead of a row it could not parse: the reason."""


class SeedFileError(ValueError):
    """A seed file that cannot be used; the message names the file, line and reason."""


@dataclass(frozen=True)
class BadRow:
    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


@dataclass
class SeedFileReport:
    seeds: list[Seed]
    bad: list[BadRow] = field(default_factory=list)


def resolve_seed_path(path: Path, data_dirs: list[Path]) -> Path:
    """The seed file's real path, refused unless it lies inside one of `data_dirs`.

    Both sides are resolved (symlinks, `..`) first, so neither `data/../../etc/x` nor a link
    inside a data folder pointing out of it gets through.
    """
    real = Path(path).resolve()
    roots = [Path(d).resolve() for d in data_dirs]
    if not any(real == r or real.is_relative_to(r) for r in roots):
        raise SeedFileError(
            f"{path}: seed file lies outside the allowed data folders "
            f"(seeds.data_dirs = {[str(d) for d in data_dirs]}); resolved to {real}"
        )
    return real


def validate_row(obj: object, max_chars: int) -> Seed | str:
    """A `Seed` from one parsed row, or the reason it is bad."""
    if not isinstance(obj, dict):
        return f"expected an object with fields {list(COLUMNS)}, got {type(obj).__name__}"
    unknown = sorted(set(obj) - set(COLUMNS))
    if unknown:
        return f"unknown field(s) {unknown}; the schema is {list(COLUMNS)}"
    for name, value in obj.items():
        if isinstance(value, str) and _BAD_BYTES.search(value):
            return f"field '{name}' is not valid UTF-8"
    q = obj.get("question")
    if not isinstance(q, str) or not q.strip():
        return f"field 'question' must be a non-empty string, got {_show(q)}"
    if len(q) > max_chars:
        return f"field 'question' has {len(q)} characters, over the cap of {max_chars}"
    if "answer" not in obj:
        return "missing field 'answer' (use null if none)"
    answer = obj["answer"]
    if isinstance(answer, bool) or (answer is not None and not isinstance(answer, str | int)):
        return f"field 'answer' must be a string, integer or null, got {_show(answer)}"
    if isinstance(answer, str) and len(answer) > max_chars:
        return f"field 'answer' has {len(answer)} characters, over the cap of {max_chars}"
    difficulty = obj.get("difficulty")
    difficulty = 1 if difficulty is None else difficulty
    if isinstance(difficulty, bool) or not isinstance(difficulty, int) or difficulty < 1:
        return f"field 'difficulty' must be a positive integer, got {_show(difficulty)}"
    sid = obj.get("id")
    if sid is not None and not (isinstance(sid, str | int) and not isinstance(sid, bool)):
        return f"field 'id' must be a string, got {_show(sid)}"
    sid = str(sid) if sid not in (None, "") else stable_hash("seed", q.strip())
    return Seed(sid, q.strip(), None if answer is None else str(answer), difficulty, "file")


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _jsonl_rows(data: bytes, max_line: int) -> Iterator[tuple[int, object]]:
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        if len(raw) > max_line:
            yield lineno, _Reason(f"line is {len(raw)} bytes, over the cap of {max_line}")
            continue
        text = raw.decode("utf-8", errors="surrogateescape")
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            yield lineno, _Reason(f"not valid JSON ({e.msg})")
            continue
        yield lineno, obj


def _csv_rows(data: bytes, max_line: int) -> Iterator[tuple[int, object]]:
    text = data.decode("utf-8", errors="surrogateescape")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as e:
        raise SeedFileError(f"line 1: the header is not valid CSV ({e})") from None
    header = [h.strip() for h in header]
    missing = [c for c in ("question", "answer") if c not in header]
    if missing:
        raise SeedFileError(f"line 1: CSV header lacks column(s) {missing}; it has {header}")
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            # The reader cannot find the next row boundary reliably after this: stop here.
            yield start, _Reason(f"not valid CSV ({e}); rows after it are not read")
            return
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            yield start, _Reason(f"{len(cells)} cells for {len(header)} columns")
            continue
        row: dict[str, object] = dict(zip(header, cells, strict=True))
        # CSV has no types: an empty cell is null, a difficulty must read as an integer.
        row = {k: (None if v == "" else v) for k, v in row.items()}
        d = row.get("difficulty")
        if isinstance(d, str):
            row["difficulty"] = int(d) if re.fullmatch(r"\s*\d+\s*", d) else d
        yield start, row


def _parquet_rows(data: bytes, max_line: int) -> Iterator[tuple[int, object]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as e:
        raise SeedFileError(f"not a readable Parquet file ({e})") from None
    for i, row in enumerate(table.to_pylist(), start=1):
        if isinstance(row.get("question"), bytes):
            row["question"] = row["question"].decode("utf-8", errors="surrogateescape")
        yield i, row


READERS = {".jsonl": _jsonl_rows, ".csv": _csv_rows, ".parquet": _parquet_rows}


def read_seed_file(
    path: Path,
    *,
    data_dirs: list[Path] | None = None,
    on_bad_row: str = "fail",
    max_chars: int = 4096,
) -> SeedFileReport:
    """Seeds from a JSONL, Parquet or CSV file, with every bad row reported.

    `data_dirs` (None: no restriction) confines the path; `on_bad_row` is `fail` or `skip`.
    """
    if on_bad_row not in ("fail", "skip"):
        raise ValueError(f"on_bad_row must be 'fail' or 'skip', got {on_bad_row!r}")
    path = Path(path)
    if data_dirs is not None:
        resolve_seed_path(path, data_dirs)
    if not path.is_file():
        raise SeedFileError(f"{path}: no such seed file")
    suffix = path.suffix.lower()
    if suffix not in READERS:
        raise SeedFileError(f"{path}: unknown seed file format {suffix!r}; use one of {FORMATS}")
    data = path.read_bytes()
    seeds: list[Seed] = []
    bad: list[BadRow] = []
    ids: dict[str, int] = {}
    # A row may hold the question and answer at the cap, plus JSON escapes and the other fields.
    max_line = 8 * max_chars + 1024
    try:
        for lineno, obj in READERS[suffix](data, max_line):
            if isinstance(obj, _Reason):
                result: Seed | str = str(obj)
            else:
                result = validate_row(obj, max_chars)
            if isinstance(result, Seed) and result.id in ids:
                result = f"duplicate seed id {result.id!r} (first on line {ids[result.id]})"
            if isinstance(result, str):
                row = BadRow(str(path), lineno, result)
                if on_bad_row == "fail":
                    raise SeedFileError(f"{row} (seeds.on_bad_row: fail)")
                bad.append(row)
                continue
            ids[result.id] = lineno
            seeds.append(result)
    except SeedFileError as e:
        if str(e).startswith(str(path)):
            raise
        raise SeedFileError(f"{path}: {e}") from None
    if not seeds:
        detail = f"; {len(bad)} bad row(s), first: {bad[0]}" if bad else ""
        raise SeedFileError(f"{path}: the seed file has no usable seeds{detail}")
    return SeedFileReport(seeds, bad)


def looks_like_suite(
    path: Path, seeds: list[Seed], suite_keys: set[str], key, share: float
) -> str | None:
    """Why this file looks like an eval suite, or None.

    A file inside a flywheel's `suite/` folder is one; so is a file whose rows are mostly
    (at least `share`) eval items by normalised exact match (`key`).
    """
    real = Path(path).resolve()
    if real.parent.name == "suite" and real.name == "seeds.parquet":
        return f"it is a flywheel's frozen eval suite ({real})"
    hits = sum(key(s.question) in suite_keys for s in seeds)
    if seeds and hits / len(seeds) >= share:
        return f"{hits} of its {len(seeds)} rows are eval-suite items (>= {share:.0%})"
    return None
