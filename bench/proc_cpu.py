"""Where a command's CPU goes, by kind of process, the whole machine counted.

`pytest -p tests.cpu_profile` charges each test with what its own process and the children it
reaped used; it cannot see processes nobody reaps (Ray's daemons, a killed server's orphans) nor
tell a fork server's workers from a Prefect server. This samples every process on the machine
once a second while COMMAND runs (/proc/<pid>/stat: user + system time, and the command line as
first seen) and sums the last reading of each process by kind (`KINDS`: the first pattern its
command line matches). A process that lives less than a second between two samples is missed;
the machine's total busy CPU (/proc/stat) is printed beside the sum, so the gap shows.

    python -m bench.proc_cpu -- .venv/bin/python -m pytest -n 2 --dist loadgroup
    python -m bench.proc_cpu --save -- make demo     # bench/results/<stamp>-proc-cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from tasks.threads import cpu_ticks

ROOT = Path(__file__).resolve().parents[1]
TICK = os.sysconf("SC_CLK_TCK")

# (kind, substrings of the command line, any of which puts a process in it), first match wins.
# pytest is matched by its module, not by "pytest" alone: a test's runs pass folders like
# /tmp/pytest-of-root/... on their command lines.
# vLLM renames its engine processes after start; the command line kept is the first one seen,
# so a spawned engine core reads as `multiprocessing.spawn`.
KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("flywheel CLI runs (orchestration)", ("flows.cli",)),
    ("fork servers and the stage workers they fork", ("tasks.forkserver",)),
    ("stage workers started as fresh interpreters", ("-m tasks.",)),
    ("vLLM OpenAI servers", ("vllm.entrypoints",)),
    ("spawned interpreters (vLLM engine cores and workers)", ("multiprocessing.spawn",)),
    ("Ray", ("ray::", "raylet", "gcs_server", "/ray/", "ray start")),
    ("MLflow servers", ("mlflow",)),  # before Prefect's: its app runs under uvicorn too
    ("Prefect servers and local APIs", ("prefect server", "prefect.server", "uvicorn")),
    ("Prefect workers and flow-run processes", ("prefect worker", "prefect.engine")),
    ("accelerate ranks", ("accelerate", "torch.distributed")),
    # after the rest: other command lines name pytest's temporary folders
    ("pytest and its xdist workers (tests' own code)", ("exec(eval(sys.stdin", "-m pytest")),
    ("PostgreSQL", ("postgres",)),
    (
        "the machine's own services",
        (
            "redis",
            "beam.smp",
            "nats-server",
            "mosquitto",
            "mariadb",
            "process_api",
            "line_io_tools",
        ),
    ),  # fmt: skip
)


def kind(cmdline: str) -> str:
    if not cmdline.strip():
        return "(gone before its command line was read)"
    return next((k for k, pats in KINDS if any(p in cmdline for p in pats)), "other")


def busy_cpu_s() -> float:
    """The whole machine's busy CPU seconds since boot (`tasks.threads.cpu_ticks`)."""
    ticks = cpu_ticks(set(range(os.cpu_count() or 1)))
    return ticks[0] / TICK if ticks else 0.0


def sample(seen: dict[tuple[str, int], list]) -> None:
    """Record every process's CPU seconds now (its command line the first time it is seen)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            cpu, started = (int(fields[11]) + int(fields[12])) / TICK, int(fields[19])
            key = (pid, started)
            if key in seen:
                seen[key][0] = cpu
            else:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                seen[key] = [cpu, cmd.decode(errors="replace")[:300]]
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile


def measure(command: list[str], interval: float = 1.0) -> dict:
    seen: dict[tuple[str, int], list] = {}
    sample(seen)
    before = {k: v[0] for k, v in seen.items()}  # what ran before the command is not its cost
    busy0, t0 = busy_cpu_s(), time.time()
    proc = subprocess.Popen(command)
    while proc.poll() is None:
        time.sleep(interval)
        sample(seen)
    sample(seen)
    wall, busy = time.time() - t0, busy_cpu_s() - busy0
    by_kind: Counter = Counter()
    count: Counter = Counter()
    for key, (cpu, cmd) in seen.items():
        used = cpu - before.get(key, 0.0)
        if used > 0:
            by_kind[kind(cmd)] += used
            count[kind(cmd)] += 1
    return {
        "command": command,
        "returncode": proc.returncode,
        "wall_s": round(wall, 1),
        "machine_busy_cpu_s": round(busy, 1),
        "sampled_cpu_s": round(sum(by_kind.values()), 1),
        "by_kind": {
            k: {"cpu_s": round(v, 1), "processes": count[k]} for k, v in by_kind.most_common()
        },
        # every process, so another grouping can be made from the file
        "processes": sorted(
            [
                [round(cpu - before.get(key, 0.0), 2), cmd]
                for key, (cpu, cmd) in seen.items()
                if cpu > before.get(key, 0.0)
            ],
            reverse=True,
        ),  # fmt: skip
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--save", action="store_true", help="write JSON under bench/results/")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ...")
    args = ap.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        ap.error("give the command after --")
    m = measure(command)
    print(
        f"\n{m['wall_s']:.0f} s wall; the machine was busy {m['machine_busy_cpu_s']:.0f} CPU-s, "
        f"{m['sampled_cpu_s']:.0f} of them seen in processes sampled once a second:"
    )
    for name, v in m["by_kind"].items():
        print(f"{v['cpu_s']:8.1f} CPU-s {v['processes']:5d} processes  {name}")
    if args.save:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        path = ROOT / "bench" / "results" / f"{stamp}-proc-cpu.json"
        path.write_text(json.dumps(m, indent=1) + "\n")
        print(path.relative_to(ROOT))
    sys.exit(m["returncode"])


if __name__ == "__main__":
    main()
