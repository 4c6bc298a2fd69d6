"""Seeds from a Hugging Face dataset: any dataset `datasets` opens, its columns mapped onto the
seed schema, every row checked like a seed-file row (`tasks.seedfile.check_rows`).

    seeds:
      dataset:
        path: parquet                       # or a local folder, a save_to_disk folder, a hub name
        data_files: data/gsm8k/train.parquet
        split: train
        columns: {question: question, answer: answer}
        answer_format: gsm8k                # `#### 72` -> 72

The gold answer is read from its column by `answer_format` (`ANSWER_FORMATS`): `gsm8k` takes the
value after the last `####` with thousands commas removed, `boxed` the content of the last
`\\boxed{...}` (braces balanced, `\\{` escapes skipped: MATH's solutions), `plain` the value as
it is. A difficulty column may hold integers or MATH's `Level 3`. Columns not mapped are ignored
(a dataset has many); a mapped column the dataset lacks stops the load, naming the columns it has.
A bad row is reported as `<dataset> [split] row <index>: reason`, index from 0 as `dataset[i]`.

Departures from calling `datasets.load_dataset`:
- Local data is confined like a seed file: the dataset's folder and every data file the builder
  resolves (globs included, links resolved) must lie under `seeds.data_dirs`, checked before any
  row is read. A hub name (nothing of that name on disk) is not confined. `datasets` opens the
  files by name, so the descriptor walk that guards seed files (`open_beneath`) does not apply;
  the hash of each file read is recorded instead.
- The fingerprint (`source`) names the data by content, not by location or time: `datasets`' own
  builder hash of local files is their modification times, and a fresh `_fingerprint` depends on
  cache paths, so local files are hashed (SHA-256); a `save_to_disk` folder's stored
  `_fingerprint` is stable and is kept beside its files' hashes; a hub dataset is named by its
  resolved commit. `source.hash` covers the data, split, config, column mapping and answer format.
- The builder is driven step by step (`load_dataset_builder`, `download_and_prepare`,
  `as_dataset`: what `load_dataset` does) so the resolved data files are known before reading.

The answer and difficulty readers are pure; `datasets` is imported only when a dataset is read.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.records import Seed, stable_hash
from tasks.seedfile import (
    BadRow,
    Reason,
    SeedFileError,
    check_rows,
    resolve_seed_path,
)

SAVED_MARKERS = ("state.json", "dataset_dict.json")  # what `save_to_disk` writes in its folder


# -- answers and difficulties (pure) -------------------------------------------------------------
def gsm8k_answer(value: object) -> str | Reason:
    """GSM8K's gold answer: the text after the last `####`, commas removed (`1,234` -> `1234`)."""
    if not isinstance(value, str):
        return Reason(f"answer must be text ending '#### <value>' (gsm8k), got {_show(value)}")
    head, sep, tail = value.rpartition("####")
    answer = tail.strip().replace(",", "")
    if not sep:
        return Reason("answer has no '#### <value>' line (answer_format: gsm8k)")
    if not answer:
        return Reason("answer has nothing after its last '####' (answer_format: gsm8k)")
    return answer


_BOX = re.compile(r"\\(?:boxed|fbox)")


def boxed_answer(value: object) -> str | Reason:
    """The content of the last `\\boxed{...}` (or `\\fbox{...}`, `\\boxed 5`) of a solution,
    braces balanced; an escaped brace (`\\{`) does not open or close a group."""
    if not isinstance(value, str):
        return Reason(f"answer must be text with a \\boxed{{...}} answer, got {_show(value)}")
    starts = [m.end() for m in _BOX.finditer(value)]
    if not starts:
        return Reason("answer has no \\boxed{...} (answer_format: boxed)")
    i = starts[-1]
    if value[i : i + 1] != "{":
        # `\boxed 5`: the token after the space, up to white space or `$`.
        m = re.match(r"\s+([^\s${}]+)", value[i:])
        return m[1] if m else Reason("answer's last \\boxed has no {...} (answer_format: boxed)")
    depth, j = 0, i
    while j < len(value):
        ch = value[j]
        if ch == "\\":
            j += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                inner = value[i + 1 : j].strip()
                return inner or Reason("answer's last \\boxed{} is empty (answer_format: boxed)")
        j += 1
    return Reason("answer's last \\boxed{ has unbalanced braces (answer_format: boxed)")


def plain_answer(value: object) -> object:
    """The value as it is; a float that is a whole number becomes an integer, another finite
    float its shortest text (Parquet and JSON readers make numeric columns floats)."""
    if isinstance(value, float) and math.isfinite(value):
        return int(value) if value.is_integer() else repr(value)
    return value


ANSWER_FORMATS = {"gsm8k": gsm8k_answer, "boxed": boxed_answer, "plain": plain_answer}
"""`seeds.dataset.answer_format` -> the reader of the gold answer from its column's value."""

_LEVEL = re.compile(r"\s*(?:level\s*)?([0-9]{1,9})\s*", re.IGNORECASE)


def difficulty_value(value: object) -> object:
    """An integer difficulty from `3`, `3.0`, `"3"` or MATH's `"Level 3"`; anything else is
    returned as it is, for the row check to refuse by name (`Level ?`)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and (m := _LEVEL.fullmatch(value)):
        return int(m[1])
    return value


def mapped_rows(
    rows: Iterator[dict], columns: dict[str, str | None], answer_format: str
) -> Iterator[tuple[int, object]]:
    """(row index, a seed-schema row or the `Reason` it has none) for each dataset row;
    `columns` maps seed fields to the dataset's columns (None: not mapped)."""
    read_answer = ANSWER_FORMATS[answer_format]
    for i, row in enumerate(rows):
        answer = read_answer(row[columns["answer"]])
        if isinstance(answer, Reason):
            yield i, answer
            continue
        out: dict[str, Any] = {"question": row[columns["question"]], "answer": answer}
        if columns.get("id"):
            out["id"] = row[columns["id"]]
        if columns.get("difficulty"):
            out["difficulty"] = difficulty_value(row[columns["difficulty"]])
        yield i, out


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# -- reading -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DatasetSpec:
    """`seeds.dataset` as the reader takes it (the config section's fields, same names)."""

    path: str
    split: str = "train"
    config: str | None = None
    data_files: str | list[str] | dict[str, str | list[str]] | None = None
    revision: str | None = None
    columns: dict[str, str | None] = field(
        default_factory=lambda: {"question": "question", "answer": "answer"}
    )
    answer_format: str = "plain"
    cache_dir: Path | None = None

    @property
    def label(self) -> str:
        """How messages name it: `data/gsm8k (main) [train]`."""
        config = f" ({self.config})" if self.config else ""
        return f"{self.path}{config} [{self.split}]"


@dataclass
class DatasetReport:
    """What `read_seed_dataset` read: the seeds, the bad rows, the local files read and the
    `source` record (the seeds manifest's `source`)."""

    paths: list[Path]
    seeds: list[Seed]
    bad: list[BadRow]
    source: dict


def read_seed_dataset(
    spec: DatasetSpec,
    *,
    domain: str,
    data_dirs: list[Path] | None = None,
    on_bad_row: str = "fail",
    max_chars: int = 4096,
) -> DatasetReport:
    """Seeds from the dataset `spec` names, each row checked like a seed-file row against
    `domain`; `data_dirs` (None: no restriction) confines local data; `on_bad_row` is `fail` or
    `skip`. Raises `SeedFileError` naming the dataset for whatever keeps it from being read."""
    if spec.answer_format not in ANSWER_FORMATS:
        raise ValueError(f"answer_format must be one of {sorted(ANSWER_FORMATS)}")
    roots = [Path("/")] if data_dirs is None else [Path(d) for d in data_dirs]
    local = Path(spec.path)
    saved = local.is_dir() and any((local / m).is_file() for m in SAVED_MARKERS)
    if local.exists():
        _confine(local, roots, spec)
        if local.is_file():
            raise SeedFileError(
                f"{spec.label}: seeds.dataset.path is a file; name its format as the path "
                f"(parquet, json or csv) and the file in data_files"
            )
    try:
        ds, files, extra = (_from_disk if saved else _from_builder)(spec, roots)
    except SeedFileError:
        raise
    except Exception as e:  # datasets raises many kinds: name the dataset and pass the cause on
        raise SeedFileError(
            f"{spec.label}: cannot load the dataset ({type(e).__name__}: {e})"
        ) from e
    columns = {k: v for k, v in spec.columns.items() if v}
    missing = {k: v for k, v in columns.items() if v not in ds.column_names}
    if missing:
        name, col = next(iter(missing.items()))
        raise SeedFileError(
            f"{spec.label}: seeds.dataset.columns.{name} is {col!r}, a column the dataset lacks; "
            f"its columns are {ds.column_names}"
        )
    seeds, bad = check_rows(
        mapped_rows(
            iter(ds.select_columns(sorted(set(columns.values())))), columns, spec.answer_format
        ),
        domain=domain,
        on_bad_row=on_bad_row,
        max_chars=max_chars,
        source=spec.label,
        unit="row",
        origin="dataset",
    )
    if not seeds:
        detail = f"; {len(bad)} bad row(s), first: {bad[0]}" if bad else ""
        raise SeedFileError(f"{spec.label}: the dataset has no usable seeds{detail}")
    hashes = {str(_shown(p, roots)): _sha256(p) for p in files}
    source = {
        "kind": "dataset",
        "path": spec.path,
        "config": spec.config,
        "split": spec.split,
        "data_files": spec.data_files,
        "revision": spec.revision,
        **extra,
        "files": hashes,
        "columns": columns,
        "answer_format": spec.answer_format,
        "rows": len(ds),
    }
    # No local file (a hub dataset, remote files): named by path, resolved commit and files.
    data = sorted(hashes.values()) or [spec.path, source["revision"], spec.data_files]
    source["hash"] = stable_hash(
        "dataset", data, spec.split, spec.config, columns, spec.answer_format
    )
    return DatasetReport(files, seeds, bad, source)


def _from_disk(spec: DatasetSpec, roots: list[Path]):
    """A `save_to_disk` folder: the split's Dataset, its data files, its stored fingerprint."""
    from datasets import Dataset, DatasetDict, load_from_disk

    for name, value in (("config", spec.config), ("data_files", spec.data_files)):
        if value is not None:
            raise SeedFileError(
                f"{spec.label}: seeds.dataset.{name} does not apply to a save_to_disk folder"
            )
    loaded = load_from_disk(str(spec.path))
    if isinstance(loaded, DatasetDict):
        if spec.split not in loaded:
            raise SeedFileError(
                f"{spec.label}: no split {spec.split!r}; the folder has {sorted(loaded)}"
            )
        folder, ds = Path(spec.path) / spec.split, loaded[spec.split]
    else:
        ds: Dataset = loaded
        if ds.split is not None and str(ds.split) != spec.split:
            raise SeedFileError(f"{spec.label}: the folder holds split {str(ds.split)!r}")
        folder = Path(spec.path)
    files = sorted(p for p in folder.iterdir() if p.suffix == ".arrow")
    for p in files:
        _confine(p, roots, spec)
    return ds, files, {"fingerprint": ds._fingerprint}


def _from_builder(spec: DatasetSpec, roots: list[Path]):
    """`load_dataset`'s steps: the builder resolves the data files (checked here), prepares the
    Arrow copy and returns the split. Returns the split's local files and, for a hub dataset,
    its resolved commit."""
    from datasets import load_dataset_builder

    builder = load_dataset_builder(
        spec.path,
        name=spec.config,
        data_files=spec.data_files,
        revision=spec.revision,
        cache_dir=None if spec.cache_dir is None else str(spec.cache_dir),
    )
    resolved = {str(k): [str(f) for f in v] for k, v in (builder.config.data_files or {}).items()}
    local = {k: [Path(f) for f in v if Path(f).exists()] for k, v in resolved.items()}
    for p in (p for v in local.values() for p in v):  # every split is prepared: all are read
        _confine(p, roots, spec)
    if resolved and spec.split not in resolved:
        raise SeedFileError(f"{spec.label}: no split {spec.split!r}; it has {sorted(resolved)}")
    builder.download_and_prepare()
    ds = builder.as_dataset(split=spec.split)
    extra = {"revision": builder.hash} if builder.repo_id else {}
    return ds, sorted(local.get(spec.split, [])), extra


def _confine(path: Path, roots: list[Path], spec: DatasetSpec) -> Path:
    try:
        return resolve_seed_path(path, roots, "the dataset's local data")
    except SeedFileError as e:
        raise SeedFileError(f"{spec.label}: {e}") from None


def _shown(path: Path, roots: list[Path]) -> Path:
    """`path` relative to the data folder holding it, so the record does not name the machine."""
    real = Path(path).resolve()
    for r in roots:
        if real.is_relative_to(r.resolve()):
            return real.relative_to(r.resolve())
    return real


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
