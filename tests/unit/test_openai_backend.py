"""The OpenAI-compatible HTTP backend against a tiny local server that misbehaves on purpose:
retries with backoff heal transient failures, a prompt that never succeeds ends as `error`
completions (an infra_error for the judge) while the rest of the batch goes on, concurrency
stays under its limit, and the API key is sent but never echoed back."""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tasks.backends import BACKENDS, HttpSettings, backoff_delay, generate_openai
from tasks.config import FlywheelConfig
from tasks.judge import Rubric, parse_verdict, vote
from tasks.requests import engine_spec, sampling_spec
from tests.http_reply import reply

CFG = FlywheelConfig(sampling={"n": 2, "max_tokens": 8})
ENGINE, SAMPLING = replace(engine_spec(CFG), backend="openai"), sampling_spec(CFG, 0)


class Server:
    """Per prompt: `ok`, `flaky` (500 twice, then ok), `garbage` (not JSON, always),
    `hang` (sleeps past the client timeout, always)."""

    def __init__(self):
        self.calls: dict[str, int] = {}
        self.in_flight = self.peak = 0
        self.keys: set[str] = set()
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = body["prompt"]
                with outer.lock:
                    outer.calls[prompt] = outer.calls.get(prompt, 0) + 1
                    outer.in_flight += 1
                    outer.peak = max(outer.peak, outer.in_flight)
                    outer.keys.add(self.headers.get("Authorization", ""))
                    count = outer.calls[prompt]
                try:
                    time.sleep(0.05)
                    if prompt.startswith("hang"):
                        time.sleep(1.0)
                    if prompt.startswith("garbage"):
                        return self._send(200, b"<html>not json")
                    if prompt.startswith("flaky") and count <= 2:
                        return self._send(500, b"{}")
                    choices = [
                        {"index": i, "text": "VERDICT: accept", "finish_reason": "stop"}
                        for i in range(body["n"])
                    ]
                    usage = {"completion_tokens": 5 * body["n"]}
                    self._send(200, json.dumps({"choices": choices, "usage": usage}).encode())
                finally:
                    with outer.lock:
                        outer.in_flight -= 1

            def _send(self, code, body):
                reply(self, code, body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.httpd.shutdown()


def settings(server, **kw):
    base = dict(
        base_url=server.url,
        api_key_env="FLYWHEEL_TEST_KEY",
        timeout_s=0.5,
        retries=3,
        backoff_s=0.01,
        concurrency=3,
    )
    return HttpSettings(**{**base, **kw})


def test_backend_is_registered():
    assert BACKENDS["openai"] is generate_openai


def test_transient_failures_heal_and_permanent_ones_end_as_errors(server, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_TEST_KEY", "sk-secret-value")
    prompts = ["ok 1", "flaky 1", "garbage 1", "hang 1", "ok 2", "ok 3", "ok 4", "ok 5"]
    timings: dict[str, float] = {}
    out = generate_openai(
        "judge", prompts, ENGINE, SAMPLING, timings=timings, settings=settings(server)
    )
    assert [len(x) for x in out] == [2] * len(prompts)
    by = dict(zip(prompts, out, strict=True))
    assert all(c.text == "VERDICT: accept" and c.num_tokens == 5 for c in by["flaky 1"])
    assert server.calls["flaky 1"] == 3  # two 500s, then success
    for bad in ("garbage 1", "hang 1"):
        assert server.calls[bad] == 4  # first try + 3 retries, then it gives up
        assert all(c.finish_reason == "error" and c.text == "" for c in by[bad])
    assert all(c.finish_reason == "stop" for p in prompts if p.startswith("ok") for c in by[p])
    assert server.peak <= 3  # the concurrency limit holds
    assert server.keys == {"Bearer sk-secret-value"}
    assert "sk-secret" not in repr(out) and "sk-secret" not in repr(timings)

    # As judge votes: the failed prompts are infra_error, never a reject.
    rubric = Rubric("t", "{question}{candidate}")
    votes = {p: vote([parse_verdict(c.text, rubric, c.finish_reason) for c in by[p]]) for p in by}
    assert votes["hang 1"].outcome == "infra_error" and "backend_error" in votes["hang 1"].reason
    assert votes["garbage 1"].outcome == "infra_error"
    assert votes["flaky 1"].outcome == "accept" and votes["ok 1"].outcome == "accept"


def test_no_key_sends_no_header(server, monkeypatch):
    monkeypatch.delenv("FLYWHEEL_TEST_KEY", raising=False)
    generate_openai("judge", ["ok"], ENGINE, SAMPLING, settings=settings(server))
    assert server.keys == {""}


def test_settings_from_environment(monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://h:1/v1/")
    monkeypatch.setenv("FLYWHEEL_HTTP_CONCURRENCY", "2")
    s = HttpSettings.from_env()
    assert (s.base_url, s.concurrency, s.api_key_env) == ("http://h:1/v1", 2, "OPENAI_API_KEY")


@pytest.mark.parametrize("attempt", [0, 1, 3, 10])
def test_backoff_is_jittered_and_capped(attempt):
    rng = random.Random(0)
    delays = [backoff_delay(attempt, 0.5, rng, cap_s=4.0) for _ in range(200)]
    bound = min(4.0, 0.5 * 2**attempt)
    assert all(0 <= d <= bound for d in delays)
    assert len(set(delays)) == 200 and max(delays) > 0.8 * bound
