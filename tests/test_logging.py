"""Access logs: one JSON line per request with its id; never the key or the prompt."""

from __future__ import annotations

import json
import time

from tests.conftest import GATEWAY_LOGS, Connect


def test_access_log_has_request_id_and_no_secrets(gateway: str, connect: Connect) -> None:
    client = connect(gateway, "sk-secret-4242")
    raw = client.chat.completions.with_raw_response.create(
        model="any-model",
        messages=[{"role": "user", "content": "TOP-SECRET-PROMPT"}],
        extra_headers={"x-request-id": "req-log-test-1"},
    )
    assert raw.headers["x-request-id"] == "req-log-test-1"
    log = GATEWAY_LOGS[gateway]
    deadline = time.monotonic() + 5
    while True:
        text = log.read_text()
        lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        mine = [e for e in lines if e.get("request_id") == "req-log-test-1"]
        if mine or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert mine, "no access log line for the request"
    entry = mine[0]
    assert entry["status"] == 200 and entry["backend"] == "open" and entry["model"] == "*"
    assert "sk-secret-4242" not in text
    assert "TOP-SECRET-PROMPT" not in text
