"""The curate stage reads the generate stage's table a bucket of seeds at a time: its files and
figures are byte for byte those of curating every sample at once, as the stage did before it
streamed (`reference_curate` and `reference_stage` below are that code, kept as the reference).

The input has what can tell the two apart: seeds whose samples are not contiguous (a second
model's samples follow the first's), exact duplicates within a seed and across two seeds in
different buckets (same prompt), seeds without a gold answer, reward columns that are all None
in some buckets, and buckets of 64 samples so that a few thousand samples make many."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import replace

import pyarrow as pa
import pytest

from bench.bench_curate import make_samples
from tasks import store
from tasks.config import FlywheelConfig
from tasks.curate import Curated, Curation, sample_verdicts
from tasks.hygiene import dedup, diversity
from tasks.records import Sample, stable_hash, to_rows
from tasks.stages import curate as curate_module


def reference_curate(samples: list[Sample], c: Curation, columns: dict | None = None) -> Curated:
    """All samples curated at once with the settings of `c` (a `Curation`, not used itself)."""
    rewards, domain, max_per_seed = c.rewards, c.domain, c.max_per_seed
    near_dup, shingle, num_perm = c.near_dup, c.shingle, c.num_perm
    combine, settings = c.combine, c.settings
    judged = sample_verdicts(samples, rewards, domain, columns, combine, settings)
    rows, counts = [], Counter()
    accepted: list[Sample] = []
    seen_per_seed: dict[str, int] = defaultdict(int)
    accepted_per_seed: dict[str, int] = defaultdict(int)
    for s, (verdict, scores, _rules) in zip(samples, judged, strict=True):
        counts[verdict.outcome] += 1
        counts[f"{verdict.outcome}:{verdict.reason}"] += 1
        seen_per_seed[s.seed_id] += 1
        if verdict.outcome == "accept":
            accepted_per_seed[s.seed_id] += 1
            accepted.append(s)
        rows.append(
            {
                "sample_id": s.id,
                "seed_id": s.seed_id,
                "outcome": verdict.outcome,
                "reason": verdict.reason,
                "kept": False,
                **{f"reward_{k}": v for k, v in scores.items()},
            }
        )
    # Shortest first inside each seed, so the representative of each cluster is its shortest.
    accepted.sort(key=lambda s: (s.seed_id, s.num_tokens, s.sample_index))
    d = dedup(
        [s.prompt + "\n" + s.completion for s in accepted],
        near_threshold=near_dup,
        shingle=shingle,
        num_perm=num_perm,
        groups=[s.seed_id for s in accepted],
    )
    counts["dropped:duplicate"] = d.exact
    counts["dropped:near_duplicate"] = d.near
    paths: dict[str, set[int]] = defaultdict(set)
    for s, c in zip(accepted, d.cluster, strict=True):
        paths[s.seed_id].add(c)
    kept_ids: set[str] = set()
    per_seed: Counter[str] = Counter()
    for i in d.keep:
        s = accepted[i]
        if per_seed[s.seed_id] >= max_per_seed:
            counts["dropped:over_cap"] += 1
            continue
        per_seed[s.seed_id] += 1
        kept_ids.add(s.id)
    for row in rows:
        row["kept"] = row["sample_id"] in kept_ids
    kept = [s for s in samples if s.id in kept_ids]
    counts["kept"] = len(kept)
    rates = {sid: accepted_per_seed[sid] / n for sid, n in seen_per_seed.items()}
    return Curated(
        kept=kept,
        rows=rows,
        counts={k: v for k, v in counts.items() if v or not k.startswith("dropped")},
        seed_pass_rate=rates,
        paths={sid: len(paths.get(sid, ())) for sid in seen_per_seed},
        diversity={
            "generated": diversity([s.completion for s in samples]),
            "accepted": diversity([s.completion for s in kept]),
        },
        rules=[r for _, _, r in judged],
    )


def reference_stage(samples: list[Sample], cfg: FlywheelConfig, out) -> dict:
    """The curate stage's files and figures as it made them from all samples at once."""
    result = reference_curate(samples, curate_module.new_curation(cfg))
    store.write_parquet(to_rows(result.kept), out / "accepted.parquet")
    store.write_parquet(result.rows, out / "verdicts.parquet")
    store.write_parquet(
        [
            {"seed_id": k, "pass_rate": v, "paths": result.paths[k]}
            for k, v in result.seed_pass_rate.items()
        ],
        out / "seed_rates.parquet",
    )
    n = max(len(samples), 1)
    return dict(
        counts=result.counts,
        accepted=len(result.kept),
        accept_rate=result.counts.get("accept", 0) / n,
        seed_solve_rate=sum(v > 0 for v in result.seed_pass_rate.values())
        / max(len(result.seed_pass_rate), 1),
        reasoning_paths=sum(result.paths.values())
        / max(sum(v > 0 for v in result.paths.values()), 1),
        diversity=result.diversity,
        hash=stable_hash(sorted(s.id for s in result.kept)),
    )


def hard_samples(count: int, no_gold_share: float, twins: bool = True) -> list[Sample]:
    """Arith samples from the benchmark's maker, made harder to stream (see the module doc)."""
    rng = random.Random(7)
    base = make_samples(count)
    no_gold = {s.seed_id for s in base if rng.random() < no_gold_share}
    base = [replace(s, answer=None) if s.seed_id in no_gold else s for s in base]
    # A second model's samples of every third seed, after all of the first's: some identical
    # to the first model's (exact duplicates inside a seed), some shorter.
    teacher = [
        replace(s, id=f"t{s.id}", model="teacher", num_tokens=s.num_tokens - (i % 3))
        for i, s in enumerate(base)
        if hash(s.seed_id) % 3 == 0 or i % 3 == 0
    ]
    # Two seeds with one prompt, at the two ends of the seed-id order, the later one first:
    # their samples are exact duplicates across seeds, and the smaller seed id must win.
    twin = [s for s in base if s.seed_id == base[0].seed_id]
    twins = [replace(s, id=f"z{s.id}", seed_id="zz-twin") for s in twin]
    twins += [replace(s, id=f"a{s.id}", seed_id="00-twin") for s in twin]
    return (twins if twins else []) + base + teacher


CASES = {
    "rules": ({"rewards": ["accuracy", "format"]}, {"near_dup": 0.9}, 0.2),
    "self-consistency": ({"rewards": ["format", "self_consistency"]}, {"near_dup": 0.7}, 0.5),
    # No prompt shared by two seeds: self-consistency votes inside buckets (with the twins the
    # whole table is one bucket).
    "self-consistency, a prompt a seed": (
        {"rewards": ["format", "self_consistency"]},
        {"near_dup": 0.7},
        0.5,
    ),
    "no gold at all": ({"rewards": ["format", "repetition"], "max_per_seed": 2}, {}, 1.0),
}


@pytest.mark.parametrize("case", [*CASES, "no samples"])
def test_streamed_stage_writes_the_same_bytes_as_curating_all_at_once(tmp_path, monkeypatch, case):
    curation, hygiene, no_gold = CASES.get(case, CASES["rules"])
    cfg = FlywheelConfig(runs_dir=tmp_path, curation=curation, hygiene=hygiene)
    samples = hard_samples(2_000, no_gold, "a prompt a seed" not in case)
    samples = samples if case != "no samples" else []
    ref = tmp_path / "reference"
    ref.mkdir()
    want = reference_stage(samples, cfg, ref)

    gen = store.stage_dir(cfg.flywheel_dir, 1, "generate")
    with store.write_stage(gen, "generate") as (tmp, _):
        store.write_parquet(to_rows(samples), tmp / "samples.parquet")
    monkeypatch.setattr(curate_module, "BUCKET_ROWS", 64)
    folder = curate_module.curate_stage.fn(cfg, 1, gen)
    man = store.read_manifest(folder)
    got = {k: man.outputs[k] for k in want}
    assert got == want
    for name in ("accepted.parquet", "verdicts.parquet", "seed_rates.parquet"):
        assert (folder / name).read_bytes() == (ref / name).read_bytes(), name
    assert sorted(man.files) == ["accepted.parquet", "seed_rates.parquet", "verdicts.parquet"]
    if samples:
        assert want["counts"]["kept"] > 0 and want["counts"].get("dropped:duplicate", 0) > 0


def test_rows_written_from_parts_are_the_bytes_of_the_rows_written_at_once(tmp_path):
    """Parts whose columns infer differently (all None here, floats or ints there) make the
    column all of them make, in the order of `order`, not of the parts."""
    rows = [
        {"id": f"r{i}", "score": None if i < 6 else (1 if i % 2 else 0.5), "n": i} for i in range(9)
    ]
    order = [4, 0, 2, 8, 1, 3, 5, 7, 6]
    parts = [rows[:3], rows[3:6], rows[6:]]  # None only, None only, ints and floats
    tables = []
    for part in parts:
        t = pa.Table.from_pylist(part)
        tables.append(t.append_column("_row", pa.array([order[r["n"]] for r in part])))
    assert tables[0].schema.field("score").type == pa.null()
    store.write_rows_in_order(tables, "_row", tmp_path / "parts.parquet")
    in_order = sorted(rows, key=lambda r: order[r["n"]])
    store.write_parquet(in_order, tmp_path / "whole.parquet")
    assert (tmp_path / "parts.parquet").read_bytes() == (tmp_path / "whole.parquet").read_bytes()
    store.write_rows_in_order([], "_row", tmp_path / "none.parquet")
    store.write_parquet([], tmp_path / "empty.parquet")
    assert (tmp_path / "none.parquet").read_bytes() == (tmp_path / "empty.parquet").read_bytes()


def test_a_parquet_column_reads_forward_and_starts_over_when_asked_back(tmp_path):
    store.write_parquet([{"x": i} for i in range(100)], tmp_path / "t.parquet")
    col = store.ParquetColumn(tmp_path / "t.parquet", "x", batch_rows=7)
    assert len(col) == 100 and list(col) == list(range(100))
    assert [col[i] for i in (3, 50, 99, 2, -1)] == [3, 50, 99, 2, 99]
    with pytest.raises(IndexError, match="row 100 of 100"):
        col[100]
