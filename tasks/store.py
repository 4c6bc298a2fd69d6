"""The generation folder: atomic stage outputs with manifests, and table I/O.

Layout: `<runs_dir>/<flywheel>/gen-NNNN/<stage>/`. A stage writes into a temporary sibling
folder, finishes with `manifest.json` (every file's size and SHA-256, row counts, and the stage's
own small outputs), and renames the folder into place last. A folder without a valid manifest
does not exist for anyone downstream: a crash mid-stage leaves only a `.tmp-*` folder, which
the next attempt removes and redoes. Completed stages are never rewritten.

Readers check before they load: `verify(path)` compares every file of a completed stage at or
under `path` with its manifest (size, SHA-256) and raises `StageCorrupt` naming the file that
was truncated, edited or deleted since; `read_parquet` and the streamed readers do it for every
table they read, and `verify_inputs` for every model folder and file a worker's request names
(`tasks.subproc.run_worker`, before the process starts), refusing too a model folder whose
weights are only pickled: nothing is ever unpickled.
Fault points (`tasks.faults`): `store.write` (a table being written), `store.commit` (the
manifest).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.faults import fault

MANIFEST = "manifest.json"


def gen_dir(flywheel_dir: Path, generation: int) -> Path:
    return Path(flywheel_dir) / f"gen-{generation:04d}"


def stage_dir(flywheel_dir: Path, generation: int, stage: str) -> Path:
    return gen_dir(flywheel_dir, generation) / stage


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Manifest:
    stage: str
    outputs: dict[str, Any] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    created: float = 0.0


class StageCorrupt(RuntimeError):
    """A completed stage whose files no longer match its manifest."""


def read_manifest(folder: Path, verify: bool = False) -> Manifest | None:
    """The stage's manifest, or None when the stage has not completed."""
    mpath = Path(folder) / MANIFEST
    if not mpath.is_file():
        return None
    try:
        data = json.loads(mpath.read_text())
        man = Manifest(**data)
    except (json.JSONDecodeError, TypeError) as e:
        raise StageCorrupt(f"{mpath}: unreadable manifest ({e})") from e
    if verify:
        _check_files(Path(folder), man)
    return man


def _check_files(stage: Path, man: Manifest, under: tuple[str, ...] = ()) -> None:
    """Every file `man` lists (at or under the relative path `under`) has its size and SHA-256;
    else `StageCorrupt` naming the first that does not."""
    for name, meta in man.files.items():
        if Path(name).parts[: len(under)] != under:
            continue
        p = stage / name
        size = p.stat().st_size if p.is_file() else None
        if size == meta["bytes"] and sha256_file(p) == meta["sha256"]:
            continue
        if size is None:
            what = "missing"
        elif size != meta["bytes"]:
            what = f"{size} bytes, the manifest says {meta['bytes']}"
        else:
            what = "same size, different SHA-256"
        raise StageCorrupt(
            f"{p}: changed since its stage completed ({what}; see {stage / MANIFEST}). "
            "Restore the file, or delete the stage folder so that the next run redoes it."
        )


def _stage_of(path: Path) -> tuple[Path, Manifest] | None:
    """The completed stage folder that `path` (a file or folder) lies in or is, with its
    manifest; None when the nearest `manifest.json` above it is none of ours (no `stage` and
    `files`: another tool's) or there is none."""
    path = Path(path).absolute()
    for folder in (path, *path.parents):
        mpath = folder / MANIFEST
        if mpath.is_file():
            try:
                data = json.loads(mpath.read_text())
            except json.JSONDecodeError as e:
                raise StageCorrupt(f"{mpath}: unreadable manifest ({e})") from e
            if not (isinstance(data, dict) and {"stage", "files"} <= data.keys()):
                return None
            try:
                return folder, Manifest(**data)
            except TypeError as e:
                raise StageCorrupt(f"{mpath}: unreadable manifest ({e})") from e
    return None


def verify(path: Path) -> Path:
    """`path`, after checking every file its stage's manifest lists at or under it (size, then
    SHA-256): the check a reader makes before loading a completed stage's file or model folder.
    Raises `StageCorrupt` naming the first file that is missing, truncated or changed; a path in
    no completed stage (a temporary file, a model from elsewhere) passes unchecked."""
    found = _stage_of(path)
    if found is not None:
        stage, man = found
        _check_files(stage, man, Path(path).absolute().relative_to(stage).parts)
    return Path(path)


PICKLED = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
"""Suffixes of pickled weights: loading one runs code from the file (`torch.load`)."""


class UnsafeModel(ValueError):
    """A model folder whose weights exist only in pickled files."""


def verify_inputs(request: Any) -> None:
    """Check every existing path a worker request names (at any depth of its JSON) before the
    worker loads it: `verify` against its stage's manifest, and a model folder (one with a
    `config.json`) must hold safetensors weights, since with only pickled ones (`*.bin`, ...)
    transformers and vLLM would unpickle them. Strings that name no existing path pass."""
    if isinstance(request, dict):
        for v in request.values():
            verify_inputs(v)
    elif isinstance(request, list | tuple):
        for v in request:
            verify_inputs(v)
    elif isinstance(request, str | Path) and os.sep in str(request):
        path = Path(request)
        try:
            exists = path.exists()
        except OSError:  # a string too long to be a path
            return
        if not exists:
            return
        verify(path)
        if path.is_dir() and (path / "config.json").is_file():
            names = [p.name for p in path.iterdir() if p.is_file()]
            pickled = sorted(n for n in names if n.endswith(PICKLED))
            if pickled and not any(n.endswith(".safetensors") for n in names):
                raise UnsafeModel(
                    f"{path}: weights only in pickled files ({', '.join(pickled)}); models are "
                    "loaded from safetensors only (convert with `save_pretrained(..., "
                    "safe_serialization=True)`)"
                )


def file_hashes(path: Path) -> dict[str, str]:
    """Relative name -> SHA-256 of every file under the folder `path`: its stage manifest's
    entries after `verify`, or hashed on the spot for a folder in no completed stage."""
    path = Path(path)
    found = _stage_of(path)
    if found is None:
        files = (p for p in path.rglob("*") if p.is_file())
        return {str(p.relative_to(path)): sha256_file(p) for p in files}
    stage, man = found
    under = path.absolute().relative_to(stage).parts
    _check_files(stage, man, under)
    return {
        str(Path(*Path(name).parts[len(under) :])): meta["sha256"]
        for name, meta in man.files.items()
        if Path(name).parts[: len(under)] == under
    }


def _row_count(path: Path) -> int | None:
    if path.suffix == ".parquet":
        return pq.ParquetFile(path).metadata.num_rows
    if path.suffix == ".jsonl":
        with open(path, "rb") as f:
            return sum(1 for line in f if line.strip())
    return None


@contextlib.contextmanager
def write_stage(folder: Path, stage: str) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Yield (tmp_dir, outputs). On clean exit, write the manifest and rename into place.

    The caller writes files into tmp_dir and puts small JSON-able results in `outputs`.
    """
    folder = Path(folder)
    if read_manifest(folder) is not None:
        raise FileExistsError(f"{folder}: stage already completed; refusing to overwrite")
    folder.parent.mkdir(parents=True, exist_ok=True)
    for stale in folder.parent.glob(f".tmp-{folder.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    if folder.exists():  # a folder with no manifest is an incomplete leftover
        shutil.rmtree(folder)
    tmp = folder.parent / f".tmp-{folder.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    outputs: dict[str, Any] = {}
    try:
        yield tmp, outputs
        files = {}
        for p in sorted(tmp.rglob("*")):
            if p.is_file():
                rel = str(p.relative_to(tmp))
                files[rel] = {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
                rows = _row_count(p)
                if rows is not None:
                    files[rel]["rows"] = rows
        man = Manifest(stage=stage, outputs=outputs, files=files, created=time.time())
        fault("store.commit")  # `enospc`: the disk fills as the manifest is written
        tmp_manifest = tmp / (MANIFEST + ".part")
        tmp_manifest.write_text(json.dumps(man.__dict__, indent=2, sort_keys=True, default=str))
        os.replace(tmp_manifest, tmp / MANIFEST)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_parquet(rows: list[dict], path: Path, schema: pa.Schema | None = None) -> None:
    write_table(pa.Table.from_pylist(rows, schema=schema), path)


def write_table(table: pa.Table, path: Path) -> None:
    """An Arrow table to Parquet: the one writer of every table (`write_parquet`'s rows too)."""
    fault("store.write")  # `enospc`: the disk fills while a dataset is written
    pq.write_table(table, path)


def read_parquet(path: Path) -> list[dict]:
    """The rows of a Parquet file, verified first when it belongs to a completed stage."""
    return pq.read_table(verify(path)).to_pylist()


def write_json(obj: Any, path: Path) -> None:
    Path(path).write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))


def write_json_atomic(obj: Any, path: Path) -> None:
    """Write JSON next to its final name, then rename: readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.part")
    write_json(obj, tmp)
    os.replace(tmp, path)


# -- tables too big for Python objects -------------------------------------------------------------
BATCH_ROWS = 16_384  # rows per record batch when a table is streamed


def row_count(path: Path) -> int:
    """Rows of a Parquet file, from its footer."""
    return pq.ParquetFile(path).metadata.num_rows


def iter_batches(
    path: Path, columns: list[str] | None = None, batch_rows: int = BATCH_ROWS
) -> Iterator[pa.RecordBatch]:
    """The record batches of a Parquet file, in order, verified first when it belongs to a
    completed stage."""
    yield from _iter_batches(verify(path), columns, batch_rows)


def _iter_batches(
    path: Path, columns: list[str] | None, batch_rows: int
) -> Iterator[pa.RecordBatch]:
    """`iter_batches` unverified. A buffered stream reads each column chunk in pieces: without
    it Arrow loads a whole column chunk (one row group, here the whole file) into memory
    first."""
    f = pq.ParquetFile(path, buffer_size=1 << 20)
    if f.metadata.num_rows == 0:
        return
    yield from f.iter_batches(batch_size=batch_rows, columns=columns)


class ParquetColumn(Sequence):
    """One column of a Parquet file as a read-only sequence that never holds the whole column:
    iterating streams record batches, and indexing reads forward from the batch last read (so
    ascending indices cost one pass; a smaller index starts over)."""

    def __init__(self, path: Path, column: str, batch_rows: int = BATCH_ROWS):
        self.path, self.column, self.batch_rows = verify(path), column, batch_rows
        self._n = pq.ParquetFile(self.path).metadata.num_rows
        self._batches: Iterator[list] | None = None
        self._start, self._values = 0, []

    def __len__(self) -> int:
        return self._n

    def _lists(self) -> Iterator[list]:
        for b in _iter_batches(self.path, [self.column], self.batch_rows):  # verified once
            yield b.column(0).to_pylist()

    def __iter__(self) -> Iterator[Any]:
        for values in self._lists():
            yield from values

    def __getitem__(self, i: int) -> Any:  # type: ignore[override]
        if not isinstance(i, int):
            raise TypeError(f"{self.path}: {self.column}: index by int, not {type(i).__name__}")
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(f"{self.path}: {self.column}: row {i} of {self._n}")
        if self._batches is None or i < self._start:
            self._batches, self._start, self._values = self._lists(), 0, []
        while i >= self._start + len(self._values):
            self._start += len(self._values)
            self._values = next(self._batches)
        return self._values[i - self._start]


def _inferred(types: list[pa.DataType], where: str) -> pa.DataType:
    """The type `pa.array` infers for a column of Python values from the types it infers for
    its parts: null only if every part is, an int column meeting a float one is a float one."""
    kinds = {t for t in types if t != pa.null()}
    if not kinds:
        return pa.null()
    if len(kinds) == 1:
        return kinds.pop()
    if kinds == {pa.int64(), pa.float64()}:
        return pa.float64()
    raise TypeError(f"{where}: parts of one column hold {sorted(map(str, kinds))}")


def write_rows_in_order(parts: list[pa.Table], order: str, path: Path) -> int:
    """Write the rows of `parts` (tables made by `Table.from_pylist`, with the same columns,
    one of them the int column `order`) sorted by `order`, without it: the same bytes as
    `write_parquet` of the same rows as one list of dicts. Each column gets the type inferred
    over all its rows, and the table is one chunk per column (a chunked table can cut Parquet
    pages elsewhere, so its bytes can differ). Returns the row count."""
    parts = [p for p in parts if p.num_rows]
    if not parts:
        write_parquet([], path)
        return 0
    names = [n for n in parts[0].schema.names if n != order]
    for p in parts[1:]:
        if [n for n in p.schema.names if n != order] != names:
            raise ValueError(f"{path}: parts with other columns: {p.schema.names} vs {names}")
    schema = pa.schema(
        pa.field(n, _inferred([p.schema.field(n).type for p in parts], f"{path}: {n}"))
        for n in names
    )
    table = pa.concat_tables(
        [p.select([*names, order]) for p in parts], promote_options="permissive"
    )
    del parts
    rows = table.take(pc.sort_indices(table[order])).select(names).combine_chunks()
    del table
    write_table(rows.cast(schema), path)
    return rows.num_rows
