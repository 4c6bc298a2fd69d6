"""Curation speed and memory: rule verdicts and the whole `curate` pass on `arith` samples.

Samples are made from the domain itself (reference solutions, and the ways a policy's samples
go wrong: a wrong answer, a broken format, a truncation, a longer correct path), so verdicts,
dedup and the per-seed cap all do real work. Each measurement runs in a fresh process
(`tasks.subproc`), so peak RSS is that run's alone and every process uses one core.

    python -m bench.bench_curate                  # throughput at 100k, RSS at 10k vs 100k
    python -m bench.bench_curate --huge 1000000 --save  # and at 1M; JSON in bench/results
    python -m bench.bench_curate --profile        # plus the top of a cProfile of curation
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
    """Worker. `make`: write `count` samples to Parquet. Otherwise time and measure what the
    curate stage does with that file (`tasks.stages.curate.curate_file`: stream it by seed
    buckets, curate, write the accepted, verdict and seed-rate tables), or only the rule
    verdicts (`rules_only`, on the samples read whole). Returns seconds, samples/s per CPU
    second, and the process's peak RSS (MiB)."""
    from tasks import store
    from tasks.curate import Curation, sample_verdicts
    from tasks.curate_stream import curate_file
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
    if request.get("rules_only"):
        t0 = time.perf_counter()
        samples = from_rows(Sample, store.read_parquet(path))
        t1, c1 = time.perf_counter(), time.process_time()
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
    dest = tmp / f"curated-{count}"
    dest.mkdir()
    t1, c1 = time.perf_counter(), time.process_time()
    result = curate_file(path, dest, Curation(rewards, domain, 4, near_dup=0.9))
    t2, c2 = time.perf_counter(), time.process_time()
    if profile is not None:
        import io
        import pstats

        profile.disable()
        buf = io.StringIO()
        pstats.Stats(profile, stream=buf).sort_stats("cumulative").print_stats(18)
        out["profile"] = buf.getvalue()
    out.update(
        curate_s=t2 - t1,
        curate_cpu_s=c2 - c1,
        curate_per_s=count / (c2 - c1),
        curate_per_wall_s=count / (t2 - t1),
        kept=result.kept,
        counts=result.counts,
        peak_rss_mib=_peak_rss_mib(),
        input_file_mib=path.stat().st_size / 2**20,
        output_mib={p.name: p.stat().st_size / 2**20 for p in sorted(dest.iterdir())},
        rows_in_file=store.row_count(path),
    )
    return out


def measure(counts: tuple[int, ...] = (10_000, 100_000), profile: bool = False) -> dict:
    """Rule verdicts at the second count, and the curate stage's streamed curation with its
    peak RSS at every count, each in a fresh single-threaded process; the inputs are made
    (and deleted) one count at a time."""
    import tempfile

    from tasks.subproc import run_worker

    small, large = counts[:2]
    runs = {}
    with tempfile.TemporaryDirectory(prefix="bench-curate-") as tmp:
        for c in counts:
            made = run_worker("bench.bench_curate", {"count": c, "tmp": tmp, "make": True})
            if c == large:
                rules = run_worker(
                    "bench.bench_curate", {"count": c, "tmp": tmp, "rules_only": True}
                )
            request = {"count": c, "tmp": tmp, "profile": profile and c == large}
            runs[c] = {**run_worker("bench.bench_curate", request), "file_mib": made["file_mib"]}
            for p in Path(tmp).glob(f"*-{c}*"):  # the 1M input is ~0.2 GB; keep one at a time
                if p.is_file():
                    p.unlink()
    return {
        "rules": rules,
        "small": runs[small],
        "large": runs[large],
        "sizes": {str(c): runs[c] for c in counts},
    }


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
            f"({large['curate_s']:.2f} s wall), one process, streamed by seed buckets with "
            "file I/O; MinHash dedup is most of it",
        ),
        Ratio(
            "P8",
            f"curation peak RSS, {large['count'] // 1000}k ÷ {small['count'] // 1000}k samples",
            ratio(large["peak_rss_mib"], small["peak_rss_mib"]),
            Goal("<=", 1.5),
            detail=f"{large['peak_rss_mib']:.0f} MiB ÷ {small['peak_rss_mib']:.0f} MiB (fresh "
            "process each: the curate stage's streamed read, curate, write)",
        ),
    ]
    return out


def cli() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, default=10_000)
    ap.add_argument("--large", type=int, default=100_000)
    ap.add_argument("--huge", type=int, default=None, help="a third size, e.g. 1000000")
    ap.add_argument("--profile", action="store_true", help="print a cProfile of curate")
    ap.add_argument("--save", action="store_true", help="write the figures to bench/results/")
    args = ap.parse_args()
    sizes = (args.small, args.large) + ((args.huge,) if args.huge else ())
    m = measure(sizes, profile=args.profile)
    if args.profile:
        print(m["large"].pop("profile"))
    for r in ratios(m):
        print(f"{r.key} {r.name}: {r.value:,.3f} {r.unit}  ({r.detail})")
    for c, run in m["sizes"].items():
        print(
            f"{int(c):>9,} samples: {run['curate_per_s']:,.0f} samples/s per CPU s "
            f"({run['curate_per_wall_s']:,.0f}/s wall, {run['curate_s']:.1f} s), "
            f"peak RSS {run['peak_rss_mib']:.0f} MiB, kept {run['kept']:,}"
        )
    if args.save:
        import json
        from datetime import UTC, datetime

        from bench.report import machine_info

        name = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-curate-sizes.json"
        path = Path(__file__).parent / "results" / name
        doc = {"machine": machine_info(), "ratios": [r.to_dict() for r in ratios(m)], **m}
        path.write_text(json.dumps(doc, indent=2, default=str))
        print(f"wrote {path}")


if __name__ == "__main__":
    import sys

    if len(sys.argv) == 3 and sys.argv[1].endswith(".json"):
        from tasks.subproc import worker_main

        worker_main(main)
    else:
        cli()
