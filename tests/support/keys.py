"""Helpers for the key API tests: the policy, the admin calls, polling."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import openai

from tests.conftest import Connect

ADMIN = "admin-key-for-tests"
SECRET = "key-secret-for-tests-0123456789abcdef"
METRICS = "metrics-token-for-tests"

POLICY = """
backends:
  open: {{provider: openai, base_url: "{oai}/v1", tier: open}}
models:
  m: {{to: [open]}}
  other: {{to: [open]}}
teams:
  search: {{keys: [sk-policy-search]}}
  apps: {{}}
  narrow: {{allowed_models: [m]}}
"""

# Every clear key the tests were given, to look for afterwards.
MINTED: list[str] = []


def admin(url: str, method: str, path: str, body: Any = None, key: str = ADMIN) -> httpx.Response:
    """One call to the key API."""
    headers = {"authorization": f"Bearer {key}"} if key else {}
    kwargs: dict[str, Any] = {"json": body} if body is not None else {}
    return httpx.request(method, url + path, headers=headers, timeout=10, **kwargs)


def create(url: str, **spec: Any) -> dict[str, Any]:
    """A new key; its clear value is remembered for the leak checks."""
    made = admin(url, "POST", "/admin/keys", spec)
    assert made.status_code == 201, made.text
    body: dict[str, Any] = made.json()
    MINTED.append(body["key"])
    return body


def until(condition: Callable[[], bool], within: float) -> float:
    """Poll `condition` until it holds; the time it took (fails past `within` seconds)."""
    start = time.monotonic()
    while not condition():
        elapsed = time.monotonic() - start
        assert elapsed < within, f"not within {within} s"
        time.sleep(0.02)
    return time.monotonic() - start


def accepted(connect: Connect, url: str, key: str) -> bool:
    """Whether the gateway at `url` takes `key` now."""
    try:
        connect(url, key).models.list()
    except openai.AuthenticationError:
        return False
    return True


def chat(client: openai.OpenAI, model: str = "m") -> str:
    answer = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}]
    )
    return answer.choices[0].message.content or ""
