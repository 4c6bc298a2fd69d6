"""What a fault test measured, for `bench/bench_faults.py`: one JSON line per fault scenario in
the file `FLYWHEEL_FAULT_FIGURES` names (nothing is written when it is unset, as in `make test`).

Figures: `recovery_s` (the resumed call, fault gone, to completion), `regenerated` (samples or
rows the resume produced again), `duplicates` (ids, rows or model versions found twice after
the resume), `left_on_disk` (what the fault left: temporary folders, stage folders without a
manifest), plus anything the scenario adds."""

from __future__ import annotations

import json
import os
from pathlib import Path

ENV = "FLYWHEEL_FAULT_FIGURES"


def record(fault: str, scenario: str, **figures: object) -> None:
    path = os.environ.get(ENV)
    if not path:
        return
    with open(path, "a") as f:
        f.write(json.dumps({"fault": fault, "scenario": scenario, **figures}, default=str) + "\n")


def left_on_disk(flywheel_dir: Path) -> list[str]:
    """Temporary stage folders and stage folders without a manifest, relative to the flywheel."""
    fw = Path(flywheel_dir)
    out = []
    for gdir in sorted(fw.glob("gen-[0-9]*")):
        for entry in sorted(gdir.iterdir()):
            if entry.is_dir() and (
                entry.name.startswith(".tmp-") or not (entry / "manifest.json").is_file()
            ):
                out.append(str(entry.relative_to(fw)))
    return out
