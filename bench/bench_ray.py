"""The `ray` backend's throughput with 1 and 2 vLLM engine replicas, side by side, on one local
Ray head (`local_head`: 127.0.0.1, no dashboard, token authentication).

Each pass starts its replicas inside the pass, so each replica count runs twice on the same
model: a one-prompt pass (joining Ray, engine starts, one batch) and the full pass. Decode
throughput is the full pass's tokens over the difference of the two wall times; the whole
pass's tokens/s (engine starts included) is printed beside it. Every pass's samples are checked
equal to the 1-replica pass's.

    .venv/bin/python -m bench.bench_ray                       # untrained default policy shape
    .venv/bin/python -m bench.bench_ray --prompts 64 --save   # JSON under bench/results/

On a CPU machine the replicas share its cores: 2 replicas measure what Ray's data parallelism
costs or gains there, not what GPU nodes would see.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from bench.report import machine_info

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def local_head(num_cpus: int, log: Path | None = None) -> Iterator[dict]:
    """A Ray head on 127.0.0.1 with `num_cpus` CPUs and no dashboard, for a machine without a
    cluster (tests, benchmarks); yields its `address` and `temp` folder (sessions, logs).

    Token authentication is on, as `ray start` sets it up: the token is made here and handed
    to the head and this process's drivers (and their subprocesses) through RAY_AUTH_MODE and
    RAY_AUTH_TOKEN, restored on exit (Ray reads them when imported: a driver that imported ray
    before the block fails to connect, "Authentication token is missing"). Every port is a
    free one, so two heads can coexist; the head stops with every process it started (`ray
    start --block` on SIGTERM), and its folder goes with it."""
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    temp = Path(tempfile.mkdtemp(prefix="fw-ray-", dir="/tmp"))  # short: Unix socket paths
    log = log or temp / "head.log"
    port = _free_port()
    cmd = [
        str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
        "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", str(num_cpus),
        "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", str(temp),
        "--ray-client-server-port", str(_free_port()),
        "--dashboard-agent-listen-port", str(_free_port()),
    ]  # fmt: skip
    # Ray's memory monitor kills workers once the machine's memory passes 95 %, whoever uses it:
    # on a machine shared with other jobs it killed the engine replicas over and over (15 in a
    # minute). Off for this head; the kernel's OOM killer still guards the machine.
    env = {**os.environ, "RAY_memory_monitor_refresh_ms": "0"}
    with open(log, "w") as out:
        head = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
    try:
        deadline = time.monotonic() + 300
        while "Ray runtime started" not in log.read_text():
            if head.poll() is not None:
                raise RuntimeError(f"ray start exited:\n{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no Ray head in 300 s:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield {"address": f"127.0.0.1:{port}", "temp": temp}
    finally:
        head.terminate()
        try:
            head.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(head.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        shutil.rmtree(temp, ignore_errors=True)  # its sessions' logs and sockets
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def _cpu_s() -> float:
    """CPU seconds of this process and of the children it reaped."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def measure(prompts: int = 64, n: int = 8, max_tokens: int = 48, model: str | None = None) -> dict:
    """Per replica count: the one-prompt pass's and the full pass's wall seconds, tokens, decode
    tokens/s, and whether its samples equal the 1-replica pass's."""
    from bench.bench_generate import untrained_default_policy
    from tasks.backend_ray import generate_ray
    from tasks.config import FlywheelConfig
    from tasks.requests import engine_spec, sampling_spec

    cfg = FlywheelConfig(
        engine={"backend": "ray", "gpu_memory_utilization": 0.1, "ray_batch_size": 32},
        sampling={"n": n, "max_tokens": max_tokens},
    )
    texts = [f"Q: {i}+{i % 7}=?\n" for i in range(prompts)]
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        model_path = model or untrained_default_policy(Path(tmp) / "models")
        with local_head(num_cpus=os.cpu_count() or 2) as head:
            engine = replace(engine_spec(cfg), ray_address=head["address"])
            sampling = sampling_spec(cfg, 0)
            runs, first = {}, None
            for replicas in (1, 2):
                e = replace(engine, replicas=replicas)
                t0 = time.perf_counter()
                generate_ray(model_path, texts[:1], e, sampling)
                t1 = time.perf_counter()
                out = generate_ray(model_path, texts, e, sampling)
                t2 = time.perf_counter()
                tokens = sum(c.num_tokens for s in out for c in s)
                first = first or out
                runs[replicas] = {
                    "start_pass_s": round(t1 - t0, 2),
                    "full_pass_s": round(t2 - t1, 2),
                    "tokens": tokens,
                    "samples": sum(len(s) for s in out),
                    "tokens_per_s_whole_pass": round(tokens / (t2 - t1), 1),
                    "decode_tokens_per_s": round(tokens / max(t2 - t1 - (t1 - t0), 1e-9), 1),
                    "equal_to_1_replica": out == first,
                }
                print(f"replicas={replicas}: {runs[replicas]}", flush=True)
    return {
        "prompts": prompts,
        "n": n,
        "max_tokens": max_tokens,
        "runs": runs,
        "decode_2_over_1": round(
            runs[2]["decode_tokens_per_s"] / runs[1]["decode_tokens_per_s"], 2
        ),
        "whole_pass_2_over_1": round(
            runs[2]["tokens_per_s_whole_pass"] / runs[1]["tokens_per_s_whole_pass"], 2
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--model", default=None, help="a local checkpoint (default: untrained)")
    ap.add_argument("--save", action="store_true", help="write JSON under bench/results/")
    args = ap.parse_args()
    machine = machine_info()
    cpu0, wall0 = _cpu_s(), time.perf_counter()
    result = measure(args.prompts, args.n, args.max_tokens, args.model)
    # This process and what it reaped: the engine replicas (Ray's workers) are not in it.
    result["driver_cpu_s"] = round(_cpu_s() - cpu0, 1)
    result["wall_s"] = round(time.perf_counter() - wall0, 1)
    result["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    doc = {"machine": machine, "bench": "ray", **result}
    print(json.dumps(result, indent=1))
    if args.save:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        path = RESULTS / f"{stamp}-ray-replicas.json"
        path.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"saved {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
