"""Small helpers for tests that talk to a gateway process: requests, metrics, access log."""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson

from tests.conftest import GATEWAY_LOGS


def client(url: str) -> httpx.Client:
    """One client for many requests (a new httpx client builds an SSL context: ~50 ms)."""
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    return httpx.Client(base_url=url, timeout=10.0, limits=limits)


def chat(http: httpx.Client, model: str, **headers: str) -> httpx.Response:
    """One non-streaming chat completion."""
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return http.post("/v1/chat/completions", json=body, headers=headers)


def stream_events(http: httpx.Client, model: str) -> tuple[list[bytes], float]:
    """A whole stream's `data:` payloads, and how long it took."""
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    started = time.monotonic()
    with http.stream("POST", "/v1/chat/completions", json=body) as resp:
        assert resp.status_code == 200, resp.read()
        events = [line[5:].strip() for line in resp.iter_lines() if line.startswith("data:")]
    return [e.encode() for e in events], time.monotonic() - started


def metric(http: httpx.Client, name: str, **labels: str) -> float:
    """The value of one series on /metrics (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in http.get("/metrics").text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        series, value = line.rsplit(" ", 1)
        head, _, rest = series.partition("{")
        have = ",".join(sorted(rest.rstrip("}").split(","))) if rest else ""
        if head == name and have == wanted:
            return float(value)
    return 0.0


def access_log(url: str, wait_s: float = 1.0) -> list[dict[str, Any]]:
    """The gateway's access log lines so far (written every 0.1 s by a thread)."""
    time.sleep(wait_s)
    lines = GATEWAY_LOGS[url].read_text().splitlines()
    entries = [orjson.loads(line) for line in lines if line.startswith("{")]
    return [e for e in entries if e.get("msg") == "request"]


def until(check: Any, timeout_s: float = 3.0, every_s: float = 0.02) -> float:
    """Poll ``check()`` until it is true; the seconds it took (fails after ``timeout_s``)."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"not true within {timeout_s} s")
        time.sleep(every_s)
    return time.monotonic() - started
