"""User seed files: untrusted input, read row by row into `Seed`s. Pure apart from reading the file.

One schema for every format (JSONL, Parquet, CSV):

    question    non-empty string, at most `max_chars` characters        (required)
    answer      string, integer or null (CSV: empty cell)                (required column)
    id          string; default: a hash of the question                  (optional)
    difficulty  positive integer; default 1                              (optional)

Every row is checked on its own, first against the schema, then against the flywheel's domain
(`tasks.domains.checks`: an `arith` question must be an expression whose value is the gold
answer, a `math` gold answer must parse), and a bad one is reported as `file:line: reason`
(Parquet and CSV: the row's line as a reader would count it). The policy decides what a bad row
does: `fail` stops at the first one, `skip` drops it and keeps the report. Whole-file faults (a
path outside the configured data folders, a missing or empty file, an eval-suite file) always
stop. The same row checks serve seeds read from a dataset (`tasks.seed_dataset`), whose rows are
named by dataset and row index instead of file and line.

Files as users have them: a UTF-8 byte-order mark (what spreadsheet tools and Windows editors
write first) is dropped from JSONL and CSV, and CRLF line endings read as LF. A row repeated
exactly (same id, question, answer and difficulty; an id-less row's id is a hash of its question)
is kept here and dropped by the seeds stage's dedup, which counts it (`duplicates.exact`); one id
given to two different contents is a bad row naming both lines.

Departures from a plain loader:
- Bytes are decoded with `surrogateescape`, so a row with invalid UTF-8 is reported on its own
  line instead of aborting the whole file at the first bad byte; an oversized line is refused by
  its byte length before it is parsed; a number too long for `int()` or JSON nested too deeply
  for the parser is a bad row, not a crash.
- The file that is read is the file that was checked: the resolved path is opened by walking
  down from the allowed folder one component at a time without following links (`open_beneath`),
  and every format is parsed from that one descriptor, so a link swapped in after the check is
  refused instead of followed.
"""

from __future__ import annotations

import codecs
import csv
import errno
import hashlib
import io
import json
import os
import re
import stat
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tasks.domains.checks import seed_check
from tasks.records import Seed, stable_hash

FORMATS = (".jsonl", ".parquet", ".csv")
COLUMNS = ("id", "question", "answer", "difficulty")
_BAD_BYTES = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of invalid UTF-8
_LIMIT = f" ({sys.get_int_max_str_digits()} digits)"  # Python's int <-> str conversion limit


class Reason(str):
    """What a reader yields instead of a row it could not use: the reason."""


class SeedFileError(ValueError):
    """A seed file that cannot be used; the message names the file, line and reason."""


@dataclass(frozen=True)
class BadRow:
    file: str  # the seed file, or the dataset and its split
    line: int  # the file's line, or the dataset's row index (from 0, as `dataset[i]` counts)
    reason: str
    unit: str = "line"  # `line` (a file) or `row` (a dataset)

    def __str__(self) -> str:
        if self.unit == "row":
            return f"{self.file} row {self.line}: {self.reason}"
        return f"{self.file}:{self.line}: {self.reason}"


@dataclass
class SeedFileReport:
    path: Path  # the resolved path that was checked and read
    seeds: list[Seed]
    bad: list[BadRow] = field(default_factory=list)
    # What the seeds came from, for the seeds manifest and lineage: kind, path, format, sha256.
    source: dict = field(default_factory=dict)

    @property
    def paths(self) -> list[Path]:
        """The local files read (one here; a dataset may have several)."""
        return [self.path]


def resolve_seed_path(path: Path, data_dirs: list[Path], what: str = "seed file") -> Path:
    """The real path of a seed file (or of a dataset's `what`), refused unless it lies inside
    one of `data_dirs`.

    Both sides are resolved (symlinks, `..`) first, so neither `data/../../etc/x` nor a link
    inside a data folder pointing out of it gets through.
    """
    real = Path(path).resolve()
    roots = [Path(d).resolve() for d in data_dirs]
    if not any(real == r or real.is_relative_to(r) for r in roots):
        raise SeedFileError(
            f"{path}: {what} lies outside the allowed data folders "
            f"(seeds.data_dirs = {[str(d) for d in data_dirs]}); resolved to {real}"
        )
    return real


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO planted in the data folder must not wait for a writer.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def open_beneath(real: Path, roots: list[Path]) -> int:
    """A read-only descriptor of the regular file at the resolved path `real`, opened by walking
    down from the root (one of `roots`) that contains it, one component at a time, following no
    symbolic link.

    Why: checking a path and then opening it by name leaves a window in which a component can
    be swapped for a link out of the folder. Walking from the root's descriptor, the resolved
    path (no `..`, no links) names only places beneath the root, and a link that appears since
    is refused (`O_NOFOLLOW`). The caller reads everything from this one descriptor.
    """
    resolved = [Path(r).resolve() for r in roots]
    root = next((r for r in resolved if real == r or real.is_relative_to(r)), None)
    if root is None:
        raise SeedFileError(f"{real} lies outside the allowed folders {[str(r) for r in roots]}")
    parts = real.relative_to(root).parts
    if not parts:
        raise SeedFileError(f"{real} is a folder, not a seed file")
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise SeedFileError(f"cannot open the data folder {root} ({e.strerror})") from None
    try:
        for depth, name in enumerate(parts, start=1):
            flags = _FILE_FLAGS if depth == len(parts) else _DIR_FLAGS
            child = _open_at(fd, name, flags, root.joinpath(*parts[:depth]))
            os.close(fd)
            fd = child
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SeedFileError(f"{real} is not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_at(dir_fd: int, name: str, flags: int, shown: Path) -> int:
    """`name` opened in the folder `dir_fd`, with the refusal a reader can act on."""
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        raise SeedFileError(f"no such seed file ({shown} does not exist)") from None
    except OSError as e:
        try:
            link = stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
        except OSError:
            link = False
        if link or e.errno == errno.ELOOP:
            raise SeedFileError(
                f"{shown} is a symbolic link; links are not followed beneath a data folder "
                "(the path changed after it was checked, or a link points inside the folder: "
                "name its target instead)"
            ) from None
        raise SeedFileError(f"cannot open {shown} ({e.strerror})") from None


def validate_row(obj: object, max_chars: int, origin: str = "file") -> Seed | str:
    """A `Seed` (of `origin`) from one parsed row, or the reason it is bad."""
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
    if isinstance(answer, int):
        answer = _int_text(answer)
        if answer is None:
            return f"field 'answer' is an integer with more digits than Python converts{_LIMIT}"
    if isinstance(answer, str) and len(answer) > max_chars:
        return f"field 'answer' has {len(answer)} characters, over the cap of {max_chars}"
    difficulty = obj.get("difficulty")
    difficulty = 1 if difficulty is None else difficulty
    if isinstance(difficulty, bool) or not isinstance(difficulty, int) or difficulty < 1:
        return f"field 'difficulty' must be a positive integer, got {_show(difficulty)}"
    sid = obj.get("id")
    if sid is not None and not (isinstance(sid, str | int) and not isinstance(sid, bool)):
        return f"field 'id' must be a string, got {_show(sid)}"
    if isinstance(sid, int):
        sid = _int_text(sid)
        if sid is None:
            return f"field 'id' is an integer with more digits than Python converts{_LIMIT}"
    if isinstance(sid, str) and len(sid) > max_chars:
        return f"field 'id' has {len(sid)} characters, over the cap of {max_chars}"
    sid = sid or stable_hash("seed", q.strip())
    return Seed(sid, q.strip(), answer, difficulty, origin)


def _int_text(n: int) -> str | None:
    """`str(n)`, or None where Python refuses: integers of over 4300 digits (by default) do not
    convert, and a crash there would abort the whole file instead of naming one row."""
    try:
        return str(n)
    except ValueError:
        return None


def _show(value: object) -> str:
    if isinstance(value, int) and _int_text(value) is None:
        return f"an integer longer than Python converts{_LIMIT}"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _jsonl_rows(data: bytes, max_line: int) -> Iterator[tuple[int, object]]:
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        raw = raw.removesuffix(b"\r")  # CRLF line endings
        if not raw.strip():
            continue
        if len(raw) > max_line:
            yield lineno, Reason(f"line is {len(raw)} bytes, over the cap of {max_line}")
            continue
        text = raw.decode("utf-8", errors="surrogateescape")
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            yield lineno, Reason(f"not valid JSON ({e.msg})")
            continue
        except ValueError:  # what json raises for an integer beyond Python's digit limit
            yield lineno, Reason(f"a number has more digits than Python converts{_LIMIT}")
            continue
        except RecursionError:
            yield lineno, Reason("JSON nested too deeply to parse")
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
            yield start, Reason(f"not valid CSV ({e}); rows after it are not read")
            return
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            yield start, Reason(f"{len(cells)} cells for {len(header)} columns")
            continue
        row: dict[str, object] = dict(zip(header, cells, strict=True))
        # CSV has no types: an empty cell is null, a difficulty must read as an integer.
        row = {k: (None if v == "" else v) for k, v in row.items()}
        d = row.get("difficulty")
        if isinstance(d, str):
            row["difficulty"] = int(d) if re.fullmatch(r"\s*[0-9]{1,18}\s*", d) else d
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
    domain: str,
    data_dirs: list[Path] | None = None,
    on_bad_row: str = "fail",
    max_chars: int = 4096,
) -> SeedFileReport:
    """Seeds from a JSONL, Parquet or CSV file, with every bad row reported.

    Rows are checked against the schema, then against `domain` (a key of `SEED_CHECKS`).
    `data_dirs` (None: no restriction) confines the path; `on_bad_row` is `fail` or `skip`.
    """
    path = Path(path)
    # A row may hold the question and answer at the cap, plus JSON escapes and the other fields.
    max_line = 8 * max_chars + 1024
    try:
        real, data = _read_checked(path, data_dirs)
        source = {
            "kind": "file",
            "path": str(path),
            "format": real.suffix.lower().lstrip("."),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        data = data.removeprefix(codecs.BOM_UTF8)  # what spreadsheet tools write first
        seeds, bad = check_rows(
            READERS[real.suffix.lower()](data, max_line),
            domain=domain,
            on_bad_row=on_bad_row,
            max_chars=max_chars,
            source=str(path),
        )
    except SeedFileError as e:
        if str(e).startswith(str(path)):
            raise
        raise SeedFileError(f"{path}: {e}") from None
    if not seeds:
        detail = f"; {len(bad)} bad row(s), first: {bad[0]}" if bad else ""
        raise SeedFileError(f"{path}: the seed file has no usable seeds{detail}")
    return SeedFileReport(real, seeds, bad, source)


def check_rows(
    rows: Iterable[tuple[int, object]],
    *,
    domain: str,
    on_bad_row: str,
    max_chars: int,
    source: str,
    unit: str = "line",
    origin: str = "file",
) -> tuple[list[Seed], list[BadRow]]:
    """The seeds of parsed `rows` ((line or row index, object or `Reason`)) and the bad rows,
    named by `source` and the row's `unit` (`line` or `row`).

    Each row is checked against the schema (`validate_row`), then against `domain`, then against
    the rows before it: an exact repeat is kept (the seeds stage's dedup drops and counts it),
    one id for two different contents is bad. `on_bad_row: fail` raises at the first bad row.
    """
    if on_bad_row not in ("fail", "skip"):
        raise ValueError(f"on_bad_row must be 'fail' or 'skip', got {on_bad_row!r}")
    check = seed_check(domain)
    seeds: list[Seed] = []
    bad: list[BadRow] = []
    first: dict[str, tuple[int, Seed]] = {}
    for pos, obj in rows:
        result = str(obj) if isinstance(obj, Reason) else validate_row(obj, max_chars, origin)
        if isinstance(result, Seed):
            result = check(result.question, result.answer) or result
        if isinstance(result, Seed) and result.id in first:
            pos0, earlier = first[result.id]
            result = _repeat(result, earlier, f"{unit} {pos0}", obj.get("id") is not None)
        if isinstance(result, str):
            row = BadRow(source, pos, result, unit)
            if on_bad_row == "fail":
                raise SeedFileError(f"{row} (seeds.on_bad_row: fail)")
            bad.append(row)
            continue
        first.setdefault(result.id, (pos, result))
        seeds.append(result)
    return seeds, bad


def _repeat(seed: Seed, earlier: Seed, at: str, explicit: bool) -> Seed | str:
    """`seed` when it repeats `earlier` (shown as `at`) exactly, else why both cannot be seeds:
    one explicit id for two contents, or (an id-less row's id is its question's hash) one
    question with two gold answers or difficulties."""
    if seed == earlier:
        return seed
    diff = [
        f"{name} {_show(getattr(seed, name))} here, {_show(getattr(earlier, name))} on {at}"
        for name in ("question", "answer", "difficulty")
        if getattr(seed, name) != getattr(earlier, name)
    ]
    what = f"seed id {_show(seed.id)} is given to" if explicit else "the same question has"
    return f"{what} two different contents ({'; '.join(diff)})"


def _read_checked(path: Path, data_dirs: list[Path] | None) -> tuple[Path, bytes]:
    """The seed file's checked real path and its bytes, read from the one descriptor that
    `open_beneath` opened (no second lookup by name)."""
    roots = [Path("/")] if data_dirs is None else list(data_dirs)
    real = resolve_seed_path(path, roots)
    suffix = real.suffix.lower()
    if suffix not in READERS:
        raise SeedFileError(f"unknown seed file format {suffix!r}; use one of {FORMATS}")
    with os.fdopen(open_beneath(real, roots), "rb") as f:
        return real, f.read()


def looks_like_suite(
    paths: Path | Iterable[Path], seeds: list[Seed], suite_keys: set[str], key, share: float
) -> str | None:
    """Why this file (or these files of one dataset) looks like an eval suite, or None.

    A file inside a flywheel's `suite/` folder is one; so is a source whose rows are mostly
    (at least `share`) eval items by normalised exact match (`key`).
    """
    for path in [paths] if isinstance(paths, Path) else paths:
        real = Path(path).resolve()
        if real.parent.name == "suite" and real.name == "seeds.parquet":
            return f"it is a flywheel's frozen eval suite ({real})"
    hits = sum(key(s.question) in suite_keys for s in seeds)
    if seeds and hits / len(seeds) >= share:
        return f"{hits} of its {len(seeds)} rows are eval-suite items (>= {share:.0%})"
    return None
