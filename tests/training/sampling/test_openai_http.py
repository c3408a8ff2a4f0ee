"""The OpenAI-compatible backend against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from training.sampling import (
    OpenAISampler,
    SamplingHTTPError,
    UnknownModelError,
    make_sampler,
)

CONVS = [[{"role": "user", "content": f"question {i}"}] for i in range(6)]


class Stub:
    """Scripted server state: ``plan`` maps the k-th completion request (0-based)
    to a behaviour ("500", "slow", "short"); everything else answers normally."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.plan: dict[int, str] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.delay = 0.0


def _handler(stub: Stub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            # The client may have timed out and left.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(data)

        def do_GET(self) -> None:
            self._send(200, {"data": [{"id": "tiny"}]})

        def do_POST(self) -> None:
            payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with stub.lock:
                k = len(stub.requests)
                stub.requests.append(payload)
                stub.in_flight += 1
                stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
            try:
                behaviour = stub.plan.get(k)
                time.sleep(stub.delay)
                if behaviour == "500":
                    self._send(500, {"error": "boom"})
                    return
                if behaviour == "slow":
                    time.sleep(1.0)
                if payload["model"] != "tiny":
                    self._send(404, {"error": "model not found"})
                    return
                n = payload["n"] if behaviour != "short" else 1
                prompt = payload["messages"][-1]["content"]
                choices = [
                    {
                        "index": i,
                        "message": {"role": "assistant", "content": f"{prompt} #{i}"},
                        "finish_reason": "length" if i == 0 else "stop",
                    }
                    for i in range(n)
                ]
                self._send(
                    200, {"choices": choices, "usage": {"completion_tokens": 3 * n}}
                )
            finally:
                with stub.lock:
                    stub.in_flight -= 1

    return Handler


@pytest.fixture
def server() -> Iterator[tuple[str, Stub]]:
    stub = Stub()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(stub))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", stub
    finally:
        httpd.shutdown()
        httpd.server_close()


def _sampler(base_url: str, **kw) -> OpenAISampler:
    sleeps: list[float] = []
    kw.setdefault("sleep", sleeps.append)  # no real backoff waits in tests
    sampler = make_sampler("openai", kw.pop("model", "tiny"), base_url=base_url, **kw)
    sampler.sleeps = sleeps  # type: ignore[attr-defined]
    return sampler  # type: ignore[return-value]


def test_n_samples_per_prompt_over_http(server):
    url, stub = server
    out = _sampler(url).sample(CONVS, 3, max_new_tokens=5, temperature=0.7, seed=1)
    assert [len(r) for r in out] == [3] * len(CONVS)
    assert out[2][1].text == "question 2 #1"
    assert out[2][0].finish_reason == "length" and out[2][1].finish_reason == "stop"
    assert all(c.token_count == 3 for r in out for c in r)
    assert {r["n"] for r in stub.requests} == {3}
    assert {r["max_tokens"] for r in stub.requests} == {5}
    assert {r["temperature"] for r in stub.requests} == {0.7}


def test_retries_after_a_500(server):
    url, stub = server
    stub.plan = {0: "500"}
    sampler = _sampler(url, max_concurrency=1)
    out = sampler.sample(CONVS[:2], 2, max_new_tokens=5)
    assert [len(r) for r in out] == [2, 2]
    assert len(stub.requests) == 3
    assert sampler.sleeps == [0.5]


def test_retries_after_a_timeout(server):
    url, stub = server
    stub.plan = {0: "slow"}
    sampler = _sampler(url, max_concurrency=1, timeout_s=0.3)
    out = sampler.sample(CONVS[:1], 2, max_new_tokens=5)
    assert out[0][0].text == "question 0 #0"
    assert len(stub.requests) == 2


def test_gives_up_after_max_retries(server):
    url, stub = server
    stub.plan = {k: "500" for k in range(10)}
    sampler = _sampler(url, max_concurrency=1, max_retries=2)
    with pytest.raises(SamplingHTTPError, match=r"after 3 attempts.*HTTP 500"):
        sampler.sample(CONVS[:1], 2, max_new_tokens=5)
    assert sampler.sleeps == [0.5, 1.0]


def test_asks_again_when_the_server_returns_fewer_choices(server):
    url, stub = server
    stub.plan = {0: "short"}
    out = _sampler(url, max_concurrency=1).sample(CONVS[:1], 3, max_new_tokens=5)
    assert len(out[0]) == 3
    assert [r["n"] for r in stub.requests] == [3, 2]


def test_concurrency_is_bounded(server):
    url, stub = server
    stub.delay = 0.05
    _sampler(url, max_concurrency=2).sample(CONVS, 1, max_new_tokens=5)
    assert stub.max_in_flight == 2


def test_unknown_model_is_refused_before_sampling(server):
    url, stub = server
    with pytest.raises(UnknownModelError, match="does not serve model 'big'"):
        _sampler(url, model="big").sample(CONVS, 2, max_new_tokens=5)
    assert stub.requests == []


def test_progress_reports_every_prompt(server):
    url, _ = server
    seen: list[tuple[int, int]] = []
    progress: Callable[[int, int], None] = lambda d, t: seen.append((d, t))  # noqa: E731
    _sampler(url).sample(CONVS, 2, max_new_tokens=5, progress=progress)
    assert sorted(seen)[-1] == (12, 12) and len(seen) == len(CONVS)
