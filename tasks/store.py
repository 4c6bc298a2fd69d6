"""The generation folder: atomic stage outputs with manifests, and table I/O.

Layout: `<runs_dir>/<flywheel>/gen-NNNN/<stage>/`. A stage writes into a temporary sibling
folder, finishes with `manifest.json` (every file's size and SHA-256, row counts, and the stage's
own small outputs), and renames the folder into place last. A folder without a valid manifest
does not exist for anyone downstream: a crash mid-stage leaves only a `.tmp-*` folder, which
the next attempt removes and redoes. Completed stages are never rewritten.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

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
        for name, meta in man.files.items():
            p = Path(folder) / name
            if not p.is_file() or sha256_file(p) != meta["sha256"]:
                raise StageCorrupt(f"{p}: missing or changed since its stage completed")
    return man


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
        tmp_manifest = tmp / (MANIFEST + ".part")
        tmp_manifest.write_text(json.dumps(man.__dict__, indent=2, sort_keys=True, default=str))
        os.replace(tmp_manifest, tmp / MANIFEST)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_parquet(rows: list[dict], path: Path, schema: pa.Schema | None = None) -> None:
    table = pa.Table.from_pylist(rows, schema=schema)
    pq.write_table(table, path)


def read_parquet(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def write_json(obj: Any, path: Path) -> None:
    Path(path).write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))


def write_json_atomic(obj: Any, path: Path) -> None:
    """Write JSON next to its final name, then rename: readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.part")
    write_json(obj, tmp)
    os.replace(tmp, path)
