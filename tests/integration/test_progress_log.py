"""A worker whose output goes to a file writes its progress as plain lines, bounded in number:
the policy bootstrap worker at tiny size, its stdout a file, as in `flywheel run > run.log`."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tasks.config import load_config
from tasks.requests import bootstrap_request, to_json

ROOT = Path(__file__).resolve().parents[2]
STEPS = 40


def test_a_worker_logging_to_a_file_prints_bounded_progress_lines(tmp_path):
    cfg = load_config(ROOT / "configs" / "tiny.yaml")
    request = dataclasses.replace(
        bootstrap_request(cfg, []),
        out_root=str(tmp_path / "models"),
        pretrain_steps=STEPS,
        batch_size=8,
        cpu_threads=None,  # the worker chooses, and says so
    )
    (tmp_path / "request.json").write_text(json.dumps(to_json(request)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TTY_", "FORCE_COLOR"))}
    env["FLYWHEEL_PROGRESS_EVERY_S"] = "0"  # the share of work alone bounds the lines
    log = tmp_path / "run.log"
    with log.open("w") as out:
        subprocess.run(
            [sys.executable, "-m", "tasks.bootstrap", "request.json", "result.json"],
            cwd=tmp_path,
            env={**env, "PYTHONPATH": str(ROOT)},
            stdout=out,
            stderr=subprocess.STDOUT,
            check=True,
            timeout=600,
        )
    text = log.read_text()
    assert re.search(
        r"^torch threads: \d+ \((OMP_NUM_THREADS|\d+ cores, load [\d.]+)\)$", text, re.M
    )
    steps = [
        int(m.group(1))
        for m in re.finditer(
            rf"^bootstrap pretraining: (\d+)/{STEPS} \(\d+ %\) loss [\d.]+", text, re.M
        )
    ]
    # a line per 5 % of the work (2 steps), the last step's included, and no more
    assert steps == list(range(2, STEPS + 1, 2)), text[-2000:]
    assert "\r" not in text
