"""Curation speed and memory: rule verdicts and the whole `curate` pass on `arith` samples.

Samples are made from the domain itself (reference solutions, and the ways a policy's samples
go wrong: a wrong answer, a broken format, a truncation, a longer correct path), so verdicts,
dedup and the per-seed cap all do real work. Each measurement runs in a fresh process
(`tasks.subproc`), so peak RSS is that run's alone and every process uses one core.

    python -m bench.bench_curate                  # throughput at 100k, RSS at 10k vs 100k
    python -m bench.bench_curate --profile        # plus the top of a cProfile of `curate`
"""

from __future__ import annotations

import argparse
import random
import resource
import time
from pathlib import Path

from tasks.records import Sample

KINDS = ("correct", "correct", "correct", "wrong", "bad_format", "truncated", "detour", "correct")


def make_samples(count: int, n: int = 8, seed: int = 0) -> list[Sample]:
    """`count` samples, `n` per seed, of arith questions at levels 1-3 with the usual faults."""
    from tasks.domains import DOMAINS

    dom = DOMAINS["arith"]
    rng = random.Random(seed)
    out: list[Sample] = []
    for s in range(-(-count // n)):
        q = dom.generate(rng, rng.randint(1, 3))
        ref = dom.solution(q.question)
        for k in range(n):
            kind = KINDS[(s + k) % len(KINDS)]
            text, finish = ref, "stop"
            if kind == "wrong":
                text = ref.replace(f"<answer>{q.answer}", f"<answer>{int(q.answer) + 1}")
            elif kind == "bad_format":
                text = ref.replace("<think>", "")
            elif kind == "truncated":
                text, finish = ref[: len(ref) // 2], "length"
            elif kind == "detour":
                text = ref.replace("<think>", f"<think>0+{q.question}={q.answer}\n")
            out.append(
                Sample(
                    id=f"{s}-{k}",
                    seed_id=q.id,
                    prompt=f"Q: {q.question}\n",
                    completion=text,
                    answer=q.answer,
                    difficulty=q.difficulty,
                    sample_index=k,
                    model="bench",
                    num_tokens=len(text),
                    finish_reason=finish,
                )
            )
    return out[:count]


def _peak_rss_mib() -> float:
    """This process's peak RSS. VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over
    from the forking parent across exec, so a worker started by a big parent reports the
    parent's size."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # KiB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main(request: dict) -> dict:
    """Worker. `make`: write `count` samples to Parquet. Otherwise time and measure a curate
    stage's work on that file, like `curate_stage`: read it, `curate` (or only the rule
    verdicts), write the accepted and verdict tables. Returns seconds per phase, samples/s per
    CPU second, and the process's peak RSS (MiB)."""
    import pyarrow.parquet as pq

    from tasks import store
    from tasks.curate import curate, sample_verdicts
    from tasks.records import from_rows, to_rows

    count, tmp = request["count"], Path(request["tmp"])
    rewards, domain = ["accuracy", "format"], "arith"
    path = tmp / f"samples-{count}.parquet"
    if request.get("make"):  # its own process, so making the input weighs on no peak RSS
        store.write_parquet(to_rows(make_samples(count)), path)
        return {"count": count, "file_mib": path.stat().st_size / 2**20}

    out: dict = {"count": count, "rss_at_start_mib": _peak_rss_mib()}
    # Rates per core use this process's CPU time (single-threaded work): on a shared machine
    # its wall time also counts the time other processes held the core.
    t0 = time.perf_counter()
    samples = from_rows(Sample, store.read_parquet(path))
    t1, c1 = time.perf_counter(), time.process_time()
    if request.get("rules_only"):
        sample_verdicts(samples, rewards, domain)
        t2, c2 = time.perf_counter(), time.process_time()
        out.update(
            read_s=t1 - t0, rules_s=t2 - t1, rules_cpu_s=c2 - c1, rules_per_s=count / (c2 - c1)
        )
        return out
    profile = None
    if request.get("profile"):
        import cProfile

        profile = cProfile.Profile()
        profile.enable()
    result = curate(samples, rewards, domain, max_per_seed=4, near_dup=0.9)
    t2, c2 = time.perf_counter(), time.process_time()
    if profile is not None:
        import io
        import pstats

        profile.disable()
        buf = io.StringIO()
        pstats.Stats(profile, stream=buf).sort_stats("cumulative").print_stats(18)
        out["profile"] = buf.getvalue()
    store.write_parquet(to_rows(result.kept), tmp / "accepted.parquet")
    store.write_parquet(result.rows, tmp / "verdicts.parquet")
    t3 = time.perf_counter()
    out.update(
        read_s=t1 - t0,
        curate_s=t2 - t1,
        curate_cpu_s=c2 - c1,
        write_s=t3 - t2,
        curate_per_s=count / (c2 - c1),
        kept=len(result.kept),
        counts=result.counts,
        peak_rss_mib=_peak_rss_mib(),
        input_file_mib=path.stat().st_size / 2**20,
        rows_in_file=pq.ParquetFile(path).metadata.num_rows,
    )
    return out


def measure(counts: tuple[int, int] = (10_000, 100_000), profile: bool = False) -> dict:
    """Rule verdicts and whole curation at the larger count, and peak RSS at both, each in a
    fresh single-threaded process."""
    import tempfile

    from tasks.subproc import run_worker

    small, large = counts
    with tempfile.TemporaryDirectory(prefix="bench-curate-") as tmp:
        for c in counts:
            run_worker("bench.bench_curate", {"count": c, "tmp": tmp, "make": True})
        rules = run_worker("bench.bench_curate", {"count": large, "tmp": tmp, "rules_only": True})
        runs = {
            c: run_worker(
                "bench.bench_curate", {"count": c, "tmp": tmp, "profile": profile and c == large}
            )
            for c in (small, large)
        }
    return {"rules": rules, "small": runs[small], "large": runs[large]}


def ratios(m: dict) -> list:
    """P3 (curation throughput per core) and P8 (RSS growth); P3's curation ÷ generation time
    comes from the flywheel run (`bench.bench_flywheel`)."""
    from bench.report import Goal, Ratio, ratio

    large, small, rules = m["large"], m["small"], m["rules"]
    out = [
        Ratio(
            "P3",
            "rule verdicts, samples/s per core (arith)",
            rules["rules_per_s"],
            Goal(">=", 50_000),
            unit="samples/s",
            detail=f"{rules['count']:,} samples in {rules['rules_cpu_s']:.2f} CPU s "
            f"({rules['rules_s']:.2f} s wall), one process",
        ),
        Ratio(
            "P3",
            "whole curation (verdicts+dedup+cap), samples/s per core",
            large["curate_per_s"],
            None,
            unit="samples/s",
            detail=f"{large['count']:,} samples in {large['curate_cpu_s']:.2f} CPU s "
            f"({large['curate_s']:.2f} s wall), one process; MinHash dedup is most of it",
        ),
        Ratio(
            "P8",
            f"curation peak RSS, {large['count'] // 1000}k ÷ {small['count'] // 1000}k samples",
            ratio(large["peak_rss_mib"], small["peak_rss_mib"]),
            Goal("<=", 1.5),
            detail=f"{large['peak_rss_mib']:.0f} MiB ÷ {small['peak_rss_mib']:.0f} MiB (fresh "
            "process each: read Parquet, curate, write)",
        ),
    ]
    return out


def cli() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, default=10_000)
    ap.add_argument("--large", type=int, default=100_000)
    ap.add_argument("--profile", action="store_true", help="print a cProfile of curate")
    args = ap.parse_args()
    m = measure((args.small, args.large), profile=args.profile)
    if args.profile:
        print(m["large"].pop("profile"))
    for r in ratios(m):
        print(f"{r.key} {r.name}: {r.value:,.3f} {r.unit}  ({r.detail})")


if __name__ == "__main__":
    import sys

    if len(sys.argv) == 3 and sys.argv[1].endswith(".json"):
        from tasks.subproc import worker_main

        worker_main(main)
    else:
        cli()
