"""Where a flywheel's seeds came from and what each source yielded, generation by generation.

    python -m bench.seed_sources runs/<name>        # a flywheel's folder (`runs_dir/<name>`)

Per generation and seed origin (`generator`, `failures`, `mutations`, `original`, ...): seeds,
accepted samples, seeds with at least one accepted sample, mean pass rate; then the seeds per
origin and level. Reads only the seeds and curate stages' files.
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict
from pathlib import Path

from tasks import store


def sources(gdir: Path) -> tuple[dict[str, dict], dict[tuple[str, int], int]]:
    """(per origin: seeds, accepted, seeds_with_accept, mean_pass; seeds per (origin, level))."""
    seeds = store.read_parquet(gdir / "seeds" / "seeds.parquet")
    rates = {
        r["seed_id"]: r["pass_rate"]
        for r in store.read_parquet(gdir / "curate" / "seed_rates.parquet")
    }
    accepted = Counter(
        r["seed_id"] for r in store.read_parquet(gdir / "curate" / "accepted.parquet")
    )
    by: dict[str, dict] = defaultdict(
        lambda: dict(seeds=0, accepted=0, seeds_with_accept=0, mean_pass=0.0)
    )
    for s in seeds:
        row = by[s["origin"]]
        row["seeds"] += 1
        row["accepted"] += accepted[s["id"]]
        row["seeds_with_accept"] += accepted[s["id"]] > 0
        row["mean_pass"] += rates.get(s["id"], 0.0)
    for row in by.values():
        row["mean_pass"] = round(row["mean_pass"] / row["seeds"], 3)
    levels = Counter((s["origin"], s["difficulty"]) for s in seeds)
    return dict(by), dict(sorted(levels.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("flywheel_dir", type=Path)
    args = ap.parse_args()
    for gdir in sorted(args.flywheel_dir.glob("gen-*")):
        if (gdir / "curate" / "seed_rates.parquet").exists():
            by, levels = sources(gdir)
            print(gdir.name, by)
            print("   levels by origin", levels)


if __name__ == "__main__":
    main()
