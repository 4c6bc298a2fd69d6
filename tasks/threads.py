"""How many torch threads a worker computes on: the cores actually free to it, unless a setting
says otherwise.

torch's default is one thread per core. On a machine others keep busy that is the slowest
choice there is: OpenMP threads spin-wait for each other at every matmul, and a thread whose
core is taken stalls all of them (measured on a loaded 2-core machine: 1 thread 3-7x faster
than 2 for the tiny models). So every worker that computes with torch (the policy and judge
bootstraps, the trainers) calls `set_torch_threads` once at start, which takes, in order:

1. the setting the caller names (`train.cpu_threads`, `bootstrap.cpu_threads`), when not None;
2. `OMP_NUM_THREADS`, when the environment sets it (torch's own override);
3. else the free cores: the CPUs this process may run on (`os.sched_getaffinity`, capped by a
   cgroup CPU quota) less the cores others keep busy, measured over `SAMPLE_S` from
   `/proc/stat` (the 1-minute load average where that file is missing: it lags, so a stage
   that just ended would still count), at least 1.

It prints its choice, one line, e.g. `torch threads: 1 (2 cores, load 1.9)`. `choose_threads`
is the pure rule; the rest reads the machine.

The count changes the numbers, not only the speed: torch splits a CPU reduction across its
threads, so the float sums round differently, and training drifts apart from there (30 steps
of the embedded judge from one seed: equal losses to the printed digit, parameters apart from
the ninth; bench/results/20261207T003800Z-threads-change-weights.txt). One count gives the same
weights run after run. So a model trained with the count left to the load can differ from a
rerun's; the bootstrap checkpoints and the train stage record the count they used
(`torch_threads` in their manifests), and a fixed setting makes reruns equal.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path

SAMPLE_S = 0.3
"""How long the busy cores are measured (/proc/stat counts in 10 ms ticks: 60 per core)."""

FREE_MARGIN = 0.25
"""A core counts as free when others use at most 25 % of it. A thread on a partly busy core
stalls every other thread at each barrier, while one thread fewer on an idle machine costs
little for small models: round towards fewer threads."""


@dataclasses.dataclass(frozen=True)
class ThreadChoice:
    """The thread count and why (the setting that forced it, or the cores and load seen)."""

    threads: int
    reason: str

    def line(self) -> str:
        return f"torch threads: {self.threads} ({self.reason})"


def choose_threads(cores: int, busy: float) -> int:
    """Threads for `cores` usable cores of which others keep `busy` (in cores) busy: the free
    cores, rounded down unless within `FREE_MARGIN` of the next, at least 1, at most `cores`."""
    free = max(0.0, cores - max(0.0, busy))
    return max(1, min(cores, math.floor(free + FREE_MARGIN)))


def decide(
    setting: int | None, setting_name: str, omp_env: str | None, cores: int, busy: float | None
) -> ThreadChoice:
    """The whole rule (see the module's docstring): `setting` (named `setting_name`) wins, then
    a valid `OMP_NUM_THREADS`, then the free cores (`busy` None: not measured yet)."""
    if setting is not None:
        if setting < 1:
            raise ValueError(f"{setting_name} must be >= 1, got {setting}")
        return ThreadChoice(setting, setting_name)
    if (omp := omp_threads(omp_env)) is not None:
        return ThreadChoice(omp, "OMP_NUM_THREADS")
    busy = busy or 0.0
    return ThreadChoice(choose_threads(cores, busy), f"{cores} cores, load {busy:.1f}")


def omp_threads(value: str | None) -> int | None:
    """`OMP_NUM_THREADS` as a thread count; None when unset or not a positive integer (OpenMP
    then ignores it too)."""
    value = (value or "").strip()
    return int(value) if value.isdigit() and int(value) >= 1 else None


def usable_cores() -> tuple[set[int], int]:
    """The CPUs this process may run on, and how many of them it may use at once (a cgroup v2
    CPU quota, `cpu.max`, can allow fewer cores' worth of time than the CPUs it may run on)."""
    try:
        cpus = set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = set(range(os.cpu_count() or 1))
    count = len(cpus)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, math.floor(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cpus, max(1, count)


def cpu_ticks(cpus: set[int]) -> tuple[int, int] | None:
    """(busy, total) clock ticks summed over `cpus`, from /proc/stat; None where unreadable."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    busy = total = 0
    for line in lines:
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
            continue
        ticks = [int(x) for x in fields[:8]]  # user nice system idle iowait irq softirq steal
        idle = ticks[3] + ticks[4]
        busy += sum(ticks) - idle
        total += sum(ticks)
    return (busy, total) if total else None


def busy_cores(cpus: set[int], seconds: float = SAMPLE_S) -> float:
    """How many of `cpus` others keep busy now: /proc/stat sampled over `seconds` while this
    process sleeps (so it does not count itself), else the 1-minute load average."""
    before = cpu_ticks(cpus)
    time.sleep(seconds)
    after = cpu_ticks(cpus)
    if before and after and after[1] > before[1]:
        share = (after[0] - before[0]) / (after[1] - before[1])
        return share * len(cpus)
    try:
        return min(float(len(cpus)), os.getloadavg()[0])
    except OSError:
        return 0.0


def set_torch_threads(setting: int | None, setting_name: str) -> ThreadChoice:
    """Choose (see the module's docstring), apply with `torch.set_num_threads`, print the line;
    the caller is a worker process about to compute."""
    import torch

    cpus, cores = usable_cores()
    omp = os.environ.get("OMP_NUM_THREADS")
    measure = setting is None and omp_threads(omp) is None
    choice = decide(setting, setting_name, omp, cores, busy_cores(cpus) if measure else None)
    torch.set_num_threads(choice.threads)
    print(choice.line(), flush=True)
    return choice
