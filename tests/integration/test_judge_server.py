"""The judge through a real OpenAI-compatible server: `vllm serve` of the embedded judge, started
by the test, behind a small proxy that makes some prompts misbehave the way real endpoints do.

- Candidates whose prompts reach the server come back as accept/reject votes of the judge.
- A prompt the proxy lets hang past the client timeout, or answers with a non-JSON body, is
  retried (bounded) and then ends as `infra_error`: the run goes on, nothing is counted as a
  reject, and the curate stage keeps such samples out of both the accepted and rejected counts.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tasks.config import FlywheelConfig
from tasks.judge_run import judge_candidates
from tasks.requests import judge_settings
from tests.http_reply import reply
from tests.integration.conftest import SERVED_NAME

pytestmark = pytest.mark.slow

HANG, GARBAGE = "hangs", "garbles"  # question words the proxy reacts to
CLIENT_TIMEOUT_S = 4.0


class MisbehavingProxy:
    """Forwards `/v1/completions` to the real server, except prompts that mention HANG (sleep
    past the client timeout) or GARBAGE (a 200 with a body that is not JSON)."""

    def __init__(self, upstream: str):
        self.seen = {"forwarded": 0, "hang": 0, "garbage": 0}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                prompt = json.loads(raw)["prompt"]
                if HANG in prompt:
                    outer.seen["hang"] += 1
                    time.sleep(CLIENT_TIMEOUT_S + 2)
                    return self._send(200, b"{}")
                if GARBAGE in prompt:
                    outer.seen["garbage"] += 1
                    return self._send(200, b"<html>502 upstream confused</html>")
                outer.seen["forwarded"] += 1
                req = urllib.request.Request(
                    upstream + "/completions", raw, {"Content-Type": "application/json"}
                )
                try:
                    with urllib.request.urlopen(req, timeout=120) as r:
                        self._send(r.status, r.read())
                except urllib.error.HTTPError as e:
                    self._send(e.code, e.read())

            def _send(self, code, body):
                reply(self, code, body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


@pytest.fixture()
def proxy(vllm_server, monkeypatch):
    p = MisbehavingProxy(vllm_server)
    monkeypatch.setenv("OPENAI_BASE_URL", p.url)
    monkeypatch.setenv("FLYWHEEL_HTTP_TIMEOUT_S", str(CLIENT_TIMEOUT_S))
    monkeypatch.setenv("FLYWHEEL_HTTP_RETRIES", "1")
    monkeypatch.setenv("FLYWHEEL_HTTP_BACKOFF_S", "0.05")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-secret")
    yield p
    p.close()


def _candidates():
    good = [
        ("12+7", "<think>12+7=19</think><answer>19</answer>"),
        ("30-4+2", "<think>30-4=26\n26+2=28</think><answer>28</answer>"),
        ("5+5", "<think>5+5=10</think><answer>11</answer>"),
        ("9-3", "<think>9-3=6</think><answer>6</answer>"),
    ]
    bad = [
        (f"{HANG} 3+4", "<think>3+4=7</think><answer>7</answer>"),
        (f"{GARBAGE} 8+1", "<think>8+1=9</think><answer>9</answer>"),
    ]
    return good, bad


def test_real_server_votes_and_misbehaving_prompts_end_as_infra_error(proxy, tmp_path):
    good, bad = _candidates()
    everything = good + bad
    log = tmp_path / "judge.log"
    votes, stats = judge_candidates(
        [q for q, _ in everything],
        [c for _, c in everything],
        judge_settings(
            FlywheelConfig(
                judge={
                    "model": SERVED_NAME,
                    "backend": "openai",
                    "k": 3,
                    "temperature": 1.0,
                    "max_candidate_chars": 160,
                }
            ),
            SERVED_NAME,
            seed=0,
            progress=False,
        ),
        log,
    )
    assert stats["candidates"] == len(everything) and stats["calls"] == 3 * len(everything)
    # The real server answered every forwarded prompt with parsable votes of the judge.
    for v in votes[: len(good)]:
        assert v.outcome in ("accept", "reject", "infra_error")
        assert v.accepts + v.rejects + v.errors == 3
    assert sum(v.accepts + v.rejects for v in votes[: len(good)]) >= 2 * len(good)
    # Hung and garbled prompts: retried once each, then infra_error — never a reject.
    for v in votes[len(good) :]:
        assert v.outcome == "infra_error" and v.reason == "judge_errors:backend_error"
        assert v.rejects == 0 and v.errors == 3
    assert proxy.seen["hang"] == 2 and proxy.seen["garbage"] == 2
    assert "sk-test-not-a-secret" not in log.read_text()


def test_curate_stage_goes_on_and_counts_nothing_as_rejected(proxy, tmp_path):
    """The curate stage with the judge on the HTTP backend deciding alone (`judge_only`)."""
    from tasks import store
    from tasks.records import Sample, Seed, to_rows
    from tasks.stages import curate_stage

    good, bad = _candidates()
    everything = good + bad
    cfg = FlywheelConfig(
        name="served",
        runs_dir=tmp_path,
        curation={"rewards": ["judge"]},
        judge={"model": SERVED_NAME, "backend": "openai", "k": 3, "combine": "judge_only"},
    )
    seeds = [Seed.make(q, "0") for q, _ in everything]
    with store.write_stage(store.stage_dir(cfg.flywheel_dir, 1, "seeds"), "seeds") as (tmp, _):
        store.write_parquet(to_rows(seeds), tmp / "seeds.parquet")
    gen = store.stage_dir(cfg.flywheel_dir, 1, "generate")
    samples = [
        Sample(f"x{i}", s.id, f"Q: {s.question}\n", c, s.answer, 1, 0, "m", 20, "stop")
        for i, (s, (_, c)) in enumerate(zip(seeds, everything, strict=True))
    ]
    with store.write_stage(gen, "generate") as (tmp, _):
        store.write_parquet(to_rows(samples), tmp / "samples.parquet")

    folder = curate_stage.fn(cfg, 1, gen)
    out = store.read_manifest(folder).outputs
    verdicts = {r["sample_id"]: r for r in store.read_parquet(folder / "verdicts.parquet")}
    for i in range(len(good), len(everything)):
        assert verdicts[f"x{i}"]["outcome"] == "infra_error"
    assert out["counts"].get("infra_error", 0) >= len(bad)
    assert out["counts"].get("reject", 0) + out["counts"].get("accept", 0) <= len(good)
    assert out["judge"]["infra_errors"] >= len(bad)
