"""Clients that go away: before their body arrives, or in the middle of a stream."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlparse

import httpx

from tests.conftest import GATEWAY_LOGS, Upstreams


def _address(url: str) -> tuple[str, int]:
    parsed = urlparse(url)
    assert parsed.hostname is not None and parsed.port is not None
    return parsed.hostname, parsed.port


def test_client_gone_before_its_body_arrived(gateway: str) -> None:
    with socket.create_connection(_address(gateway)) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b'content-length: 1000\r\n\r\n{"model": "any-model", "mess'
        )
    time.sleep(0.3)
    body = {"model": "any-model", "messages": [{"role": "user", "content": "still there?"}]}
    assert httpx.post(gateway + "/v1/chat/completions", json=body).status_code == 200
    assert "Traceback" not in GATEWAY_LOGS[gateway].read_text()


def test_client_gone_mid_stream_closes_the_upstream_stream(
    gateway: str, upstreams: Upstreams
) -> None:
    # ~2 s of stream from the scripted upstream (one word per millisecond or so).
    words = " ".join(f"w{i}" for i in range(2000))
    body = {
        "model": "any-model",
        "stream": True,
        "messages": [{"role": "user", "content": words}],
    }
    before = upstreams.openai_state.streams_abandoned
    with (
        httpx.Client(base_url=gateway) as client,
        client.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        assert response.status_code == 200
        next(response.iter_raw())  # the stream has started; now hang up
    deadline = time.monotonic() + 1.5  # well before the upstream would have finished
    while upstreams.openai_state.streams_abandoned == before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert upstreams.openai_state.streams_abandoned == before + 1
    assert "Traceback" not in GATEWAY_LOGS[gateway].read_text()
