"""The judge through a real OpenAI-compatible server: `vllm serve` of the embedded judge, started
by the test, behind a small proxy that makes some prompts misbehave the way real endpoints do.

- Candidates whose prompts reach the server come back as accept/reject votes of the judge.
- A prompt the proxy lets hang past the client timeout, answers with a non-JSON body, with
  HTTP 503 or with 429, is retried (bounded) and then ends as `infra_error`: the run goes on,
  nothing is counted as a reject, and the curate stage keeps such samples out of both the
  accepted and rejected counts, up to `judge.max_infra_error_share`.
- Past that share the curate stage stops with an error naming it and leaves no curate folder;
  once the endpoint answers again, the same call lands the stage (fault 7 of the fault suite).
"""

from __future__ import annotations

import json
import re
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

HANG, GARBAGE, UNAVAILABLE, LIMITED = "hangs", "garbles", "unavailable", "limited"  # the proxy
# reacts to these question words: sleep past the client timeout, a non-JSON 200, 503, 429
CLIENT_TIMEOUT_S = 4.0


class MisbehavingProxy:
    """Forwards `/v1/completions` to the real server, except prompts that mention HANG (sleep
    past the client timeout), GARBAGE (a 200 with a body that is not JSON), UNAVAILABLE (503)
    or LIMITED (429 with Retry-After), until `healed` is set."""

    def __init__(self, upstream: str):
        self.seen = {"forwarded": 0, "hang": 0, "garbage": 0, "503": 0, "429": 0}
        self.healed = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                prompt = json.loads(raw)["prompt"]
                if outer.healed:
                    prompt = ""
                if UNAVAILABLE in prompt:
                    outer.seen["503"] += 1
                    return self._send(503, b'{"error": "overloaded"}')
                if LIMITED in prompt:
                    outer.seen["429"] += 1
                    return self._send(429, b'{"error": "rate limited"}')
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
        (f"{UNAVAILABLE} 2+2", "<think>2+2=4</think><answer>4</answer>"),
        (f"{LIMITED} 6-1", "<think>6-1=5</think><answer>5</answer>"),
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
    # Hung, garbled, 503 and 429 prompts: retried once each, then infra_error — never a reject.
    for v in votes[len(good) :]:
        assert v.outcome == "infra_error" and v.reason == "judge_errors:backend_error"
        assert v.rejects == 0 and v.errors == 3
    assert {k: proxy.seen[k] for k in ("hang", "garbage", "503", "429")} == dict.fromkeys(
        ("hang", "garbage", "503", "429"), 2
    )
    assert "sk-test-not-a-secret" not in log.read_text()


def _curate_inputs(tmp_path, max_infra_error_share: float):
    """A config with the judge on the HTTP backend deciding alone (`judge_only`), and the seeds
    and generate folders of generation 1 with one sample per candidate."""
    from tasks import store
    from tasks.records import Sample, Seed, stable_hash, to_rows

    good, bad = _candidates()
    everything = good + bad
    cfg = FlywheelConfig(
        name="served",
        runs_dir=tmp_path,
        curation={"rewards": ["judge"]},
        judge={
            "model": SERVED_NAME,
            "backend": "openai",
            "k": 3,
            "combine": "judge_only",
            "max_infra_error_share": max_infra_error_share,
        },
    )
    seeds = [Seed.make(q, "0") for q, _ in everything]
    seeds_dir = store.stage_dir(cfg.flywheel_dir, 1, "seeds")
    with store.write_stage(seeds_dir, "seeds") as (tmp, out):
        store.write_parquet(to_rows(seeds), tmp / "seeds.parquet")
        out.update(count=len(seeds), difficulty=1.0, hash=stable_hash([s.id for s in seeds]))
    gen = store.stage_dir(cfg.flywheel_dir, 1, "generate")
    samples = [
        Sample(f"x{i}", s.id, f"Q: {s.question}\n", c, s.answer, 1, 0, "m", 20, "stop")
        for i, (s, (_, c)) in enumerate(zip(seeds, everything, strict=True))
    ]
    with store.write_stage(gen, "generate") as (tmp, out):
        store.write_parquet(to_rows(samples), tmp / "samples.parquet")
        out.update(model="m", params={"n": 1}, samples=len(samples), hash="h")
    return cfg, gen, len(good), len(bad)


def test_curate_stage_goes_on_and_counts_nothing_as_rejected(proxy, tmp_path):
    from tasks import store
    from tasks.stages import curate_stage
    from tests.faults.invariants import assert_invariants

    cfg, gen, n_good, n_bad = _curate_inputs(tmp_path, max_infra_error_share=0.9)
    folder = curate_stage.fn(cfg, 1, gen)
    out = store.read_manifest(folder).outputs
    verdicts = {r["sample_id"]: r for r in store.read_parquet(folder / "verdicts.parquet")}
    for i in range(n_good, n_good + n_bad):
        assert verdicts[f"x{i}"]["outcome"] == "infra_error"
    assert out["counts"].get("infra_error", 0) >= n_bad
    assert out["counts"].get("reject", 0) + out["counts"].get("accept", 0) <= n_good
    assert out["judge"]["infra_errors"] >= n_bad
    assert_invariants(cfg.flywheel_dir)


def test_curate_stage_stops_past_the_infra_error_share_and_resumes_once_healed(
    proxy, tmp_path, monkeypatch
):
    """Fault 7: half the candidates end as infra_error (hang, garbage, 503, 429) against a limit
    of 0.25: the stage stops naming the share and the limit, nothing of curate lands, the
    folders before it stay; the endpoint healed, the same stage lands with every sample."""
    from tasks import store
    from tasks.judge import JudgeInfraErrors
    from tasks.stages import curate_stage
    from tests.faults.figures import left_on_disk, record
    from tests.faults.invariants import assert_invariants, snapshot

    cfg, gen, n_good, n_bad = _curate_inputs(tmp_path, max_infra_error_share=0.25)
    before = snapshot(cfg.flywheel_dir)
    with pytest.raises(JudgeInfraErrors, match=r"max_infra_error_share 0\.25") as e:
        curate_stage.fn(cfg, 1, gen)
    # Every bad candidate ends as infra_error; on a loaded machine a good one may time out too.
    share = re.search(r"(\d+) of (\d+) votes", str(e.value))
    assert share and int(share[2]) == n_good + n_bad and int(share[1]) >= n_bad, str(e.value)
    assert "judge_errors:backend_error" in str(e.value)
    curate = store.stage_dir(cfg.flywheel_dir, 1, "curate")
    assert not curate.exists() and not list(curate.parent.glob(".tmp-curate-*"))
    assert_invariants(cfg.flywheel_dir, before=before)

    left = left_on_disk(cfg.flywheel_dir)
    proxy.healed = True
    # Healed: nothing hangs any more, and all 8 prompts now reach the CPU server at once (24
    # completions in one batch), longer than the 4 s that made the hangs cheap to wait out.
    monkeypatch.setenv("FLYWHEEL_HTTP_TIMEOUT_S", "120")
    forwarded = proxy.seen["forwarded"]
    t0 = time.perf_counter()
    folder = curate_stage.fn(cfg, 1, gen)
    recovery_s = time.perf_counter() - t0
    # Every candidate reaches the server (a slow reply may be asked for again, never skipped).
    assert proxy.seen["forwarded"] - forwarded >= n_good + n_bad
    out = store.read_manifest(folder).outputs
    assert out["judge"]["infra_errors"] <= 0.25 * (n_good + n_bad)
    assert_invariants(cfg.flywheel_dir, before=before)
    ids = [r["sample_id"] for r in store.read_parquet(folder / "verdicts.parquet")]
    record(
        7,
        "judge endpoint: hang, garbage, 503, 429 on half the candidates (limit 0.25), healed",
        recovery_s=round(recovery_s, 1),
        regenerated=0,
        redone=f"curate: {len(ids)} verdicts",
        duplicates=len(ids) - len(set(ids)),
        left_on_disk=left,
    )
