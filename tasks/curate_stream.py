"""Curation of a generate stage's table of any size, a bucket of seeds at a time.

The table is split by seed into buckets of whole seeds with consecutive ids (Arrow stream files
in the stage's temporary folder), each bucket is curated by `tasks.curate.Curation` in seed-id
order, and the outputs are written in the table's order, byte for byte what curating every
sample at once writes. What stays whole in memory: the per-seed counts, the exact-duplicate key
of each accepted sample, one bucket as Python objects, and the two output tables as Arrow
columns (see `curate_file`). Where two seeds share a prompt and `self_consistency` is a reward
(it votes per prompt), the whole table is one bucket.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from tasks import store
from tasks.curate import Curation
from tasks.hygiene import diversity
from tasks.records import Sample, Verdict, from_rows, stable_hash, to_rows

BUCKET_ROWS = 8_192
"""Samples per bucket of whole seeds: what curation holds as Python objects at once."""


@dataclass(frozen=True)
class FileCurated:
    """What `curate_file` wrote, in figures: the manifest's, and the rules' verdicts of the
    samples asked for (judge QC)."""

    counts: dict[str, int]
    kept: int
    seed_pass_rate: dict[str, float]
    paths: dict[str, int]
    diversity: dict[str, dict[str, float]]
    hash: str
    rules: dict[int, Verdict | None]


def curate_file(
    path: Path,
    out: Path,
    curation: Curation,
    columns: dict[str, list] | None = None,
    rules_of: Iterable[int] = (),
    bucket_rows: int = BUCKET_ROWS,
) -> FileCurated:
    """Curate the samples in the Parquet file `path` into `out` (accepted.parquet,
    verdicts.parquet, seed_rates.parquet), never holding more than one bucket of samples as
    Python objects: the samples are split by seed into buckets of about `bucket_rows` (whole
    seeds, consecutive seed ids) in files under `out`, curated a bucket at a time in seed-id
    order, and the outputs written in input order. `columns` hold one value per sample of
    `path`, in its order (the judge's verdicts, reward-model scores).

    Memory: what is held whole is the per-seed counts, the exact keys of accepted samples and,
    in Arrow's compact form, the rows of the two output tables: each is written as one row
    group (Parquet's writer holds a row group's pages until it closes anyway), so that the files
    are byte for byte those of curating all samples at once (`tasks.curate.curate`)."""
    columns = columns or {}
    seeds = _seed_counts(path, "self_consistency" in curation.rewards)
    if seeds is None:  # a prompt that two seeds share: self-consistency votes across them
        bucket_rows = store.row_count(path) + 1
        seeds = _seed_counts(path, False)
    bucket_of = _buckets(seeds, bucket_rows)
    spill = out / "buckets"
    spill.mkdir()
    files = _split(path, spill, bucket_of)
    wanted = set(rules_of)
    verdicts, accepted, rules = [], [], {}
    for f in files:
        with pa.ipc.open_stream(f) as reader:
            table = reader.read_all()
        f.unlink()
        rows = table[ROW].to_pylist()
        samples = from_rows(Sample, table.to_pylist())
        del table
        b = curation.add(samples, {k: [v[r] for r in rows] for k, v in columns.items()})
        verdicts.append(_with_rows(b.rows, rows))
        accepted.append(
            _with_rows(to_rows([samples[i] for i in b.kept]), [rows[i] for i in b.kept])
        )
        rules.update((r, v) for r, v in zip(rows, b.rules, strict=True) if r in wanted)
    spill.rmdir()
    kept = store.write_rows_in_order(accepted, ROW, out / "accepted.parquet")
    del accepted
    store.write_rows_in_order(verdicts, ROW, out / "verdicts.parquet")
    del verdicts
    rates, paths = curation.seed_pass_rate(seeds), curation.path_counts(seeds)
    store.write_parquet(
        [{"seed_id": k, "pass_rate": v, "paths": paths[k]} for k, v in rates.items()],
        out / "seed_rates.parquet",
    )
    kept_file = out / "accepted.parquet"
    return FileCurated(
        counts=curation.totals(),
        kept=kept,
        seed_pass_rate=rates,
        paths=paths,
        diversity={
            "generated": diversity(store.ParquetColumn(path, "completion") if seeds else []),
            "accepted": diversity(store.ParquetColumn(kept_file, "completion") if kept else []),
        },
        hash=stable_hash(sorted(store.ParquetColumn(kept_file, "id")) if kept else []),
        rules=rules,
    )


ROW = "_row"  # a sample's position in the generate stage's table, while buckets are apart


def _with_rows(rows: list[dict], positions: list[int]) -> pa.Table:
    t = pa.Table.from_pylist(rows)
    return t.append_column(ROW, pa.array(positions, pa.int64())) if rows else t


def _seed_counts(path: Path, one_seed_per_prompt: bool) -> dict[str, int] | None:
    """Samples per seed id, in order of first appearance; with `one_seed_per_prompt`, None if
    two seeds share a prompt (self-consistency then votes across them)."""
    counts: dict[str, int] = {}
    prompts: dict[bytes, str] = {}
    cols = ["seed_id", "prompt"] if one_seed_per_prompt else ["seed_id"]
    for batch in store.iter_batches(path, cols):
        seed_ids = batch.column(0).to_pylist()
        for sid in seed_ids:
            counts[sid] = counts.get(sid, 0) + 1
        if one_seed_per_prompt:
            for sid, p in zip(seed_ids, batch.column(1).to_pylist(), strict=True):
                if prompts.setdefault(hashlib.sha256(p.encode()).digest(), sid) != sid:
                    return None
    return counts


def _buckets(seeds: dict[str, int], bucket_rows: int) -> dict[str, int]:
    """Bucket number per seed id: consecutive seed ids, about `bucket_rows` samples a bucket
    (a seed with more has one to itself)."""
    out, bucket, size = {}, 0, 0
    for sid in sorted(seeds):
        if size and size + seeds[sid] > bucket_rows:
            bucket, size = bucket + 1, 0
        out[sid] = bucket
        size += seeds[sid]
    return out


def _split(path: Path, folder: Path, bucket_of: dict[str, int]) -> list[Path]:
    """The samples of `path`, each with its row number, appended to the Arrow stream file of
    its bucket in input order; the files in bucket order."""
    count = max(bucket_of.values(), default=-1) + 1
    files = [folder / f"{b:05d}.arrows" for b in range(count)]
    writers: dict[int, pa.ipc.RecordBatchStreamWriter] = {}
    start = 0
    try:
        for batch in store.iter_batches(path):
            batch = batch.append_column(
                ROW, pa.array(range(start, start + batch.num_rows), pa.int64())
            )
            start += batch.num_rows
            members: dict[int, list[int]] = defaultdict(list)
            for i, sid in enumerate(batch.column("seed_id").to_pylist()):
                members[bucket_of[sid]].append(i)
            for b, idx in members.items():
                if b not in writers:
                    writers[b] = pa.ipc.new_stream(files[b], batch.schema)
                writers[b].write_batch(batch.take(idx))
    finally:
        for w in writers.values():
            w.close()
    return [f for f in files if f.exists()]
