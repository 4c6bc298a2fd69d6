"""Landed stage folders for stage-level fault tests: seeds and generate of one generation, as the
stages write them (rows, manifest outputs), without running an engine."""

from __future__ import annotations

from pathlib import Path

from tasks import store
from tasks.records import Sample, Seed, stable_hash, to_rows

ARITH = [  # question, completion; every answer right, so the rules accept each
    ("12+7", "<think>12+7=19</think><answer>19</answer>"),
    ("30-4+2", "<think>30-4=26\n26+2=28</think><answer>28</answer>"),
    ("9-3", "<think>9-3=6</think><answer>6</answer>"),
    ("5+5", "<think>5+5=10</think><answer>10</answer>"),
    ("8+1", "<think>8+1=9</think><answer>9</answer>"),
    ("14-6", "<think>14-6=8</think><answer>8</answer>"),
]


def seeds_and_samples(
    flywheel_dir: Path, generation: int = 1, items: list[tuple[str, str]] = ARITH
) -> Path:
    """Land the seeds and generate folders of `generation` (one sample per seed, n=1); the
    generate folder."""
    seeds = [Seed.make(q, str(eval(q))) for q, _ in items]  # arith questions: digits and +-
    with store.write_stage(store.stage_dir(flywheel_dir, generation, "seeds"), "seeds") as (
        tmp,
        out,
    ):
        store.write_parquet(to_rows(seeds), tmp / "seeds.parquet")
        out.update(count=len(seeds), difficulty=1.0, hash=stable_hash([s.id for s in seeds]))
    samples = [
        Sample(
            f"g{generation}-x{i}", s.id, f"Q: {s.question}\n", c, s.answer, 1, 0, "m", 20, "stop"
        )
        for i, (s, (_, c)) in enumerate(zip(seeds, items, strict=True))
    ]
    gen = store.stage_dir(flywheel_dir, generation, "generate")
    with store.write_stage(gen, "generate") as (tmp, out):
        store.write_parquet(to_rows(samples), tmp / "samples.parquet")
        out.update(
            model="m",
            params={"n": 1},
            samples=len(samples),
            hash=stable_hash(sorted(s.id for s in samples)),
        )
    return gen
