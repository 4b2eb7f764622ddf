"""Fixtures: scripted upstreams, a test-started Redis, and the gateway as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import openai
import pytest

from tests.support.fake_upstreams import FakeUpstream, anthropic_app, openai_app, serve_in_thread
from tests.support.model_servers import free_port
from tests.support.redis_server import RedisDb, RedisServer, run_redis_server

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Upstreams:
    """The two scripted upstreams and their recorded state."""

    openai_url: str
    openai_state: FakeUpstream
    anthropic_url: str
    anthropic_state: FakeUpstream


@pytest.fixture(scope="session")
def upstreams() -> Iterator[Upstreams]:
    oai, anth = FakeUpstream(), FakeUpstream()
    with serve_in_thread(openai_app(oai)) as oai_url, serve_in_thread(anthropic_app(anth)) as a_url:
        yield Upstreams(oai_url, oai, a_url, anth)


TEST_POLICY = """
backends:
  open:
    provider: openai
    base_url: {oai}/v1
    tier: open
    price: {{input_per_mtok: 0.1, output_per_mtok: 0.2}}
  strong:
    provider: openai
    base_url: {oai}/v1
    api_key: test-openai-key
    model: strong-model
    tier: closed
    price: {{input_per_mtok: 2.0, output_per_mtok: 8.0}}
  claude:
    provider: anthropic
    base_url: {anth}/v1
    api_key: test-anthropic-key
    model: claude-test
    tier: closed
    price: {{input_per_mtok: 3.0, output_per_mtok: 15.0}}
  broken:
    provider: openai
    base_url: {oai}/fail500/v1
    tier: open
  limited:
    provider: openai
    base_url: {oai}/ratelimited/v1
    tier: open
  refused:
    provider: openai
    base_url: http://127.0.0.1:{dead}/v1
    tier: open
  slow:
    provider: openai
    base_url: {oai}/slow/v1
    tier: open
    timeout_s: 0.5
  cut:
    provider: openai
    base_url: {oai}/cut/v1
    tier: open
  claude-badkey:
    provider: anthropic
    base_url: {anth}/v1
    api_key: wrong-key
    model: claude-test
    tier: closed
  claude-cut:
    provider: anthropic
    base_url: {anth}/cut/v1
    api_key: test-anthropic-key
    model: claude-test
    tier: closed
  garbage:
    provider: openai
    base_url: {oai}/garbage/v1
    tier: open
  cookie:
    provider: openai
    base_url: {oai_by_name}/cookie/v1
    tier: open
  nokey:
    provider: openai
    base_url: {oai}/v1
    api_key: ${{GATEWAY_TEST_UNSET_KEY:-}}
    model: never-used
    tier: closed
models:
  "*": {{to: [open]}}
  claude: {{to: [claude]}}
  claude-cut: {{to: [claude-cut]}}
  claude-badkey: {{to: [claude-badkey]}}
  fallback-500: {{to: [broken, open]}}
  fallback-429: {{to: [limited, open]}}
  fallback-refused: {{to: [refused, open]}}
  fallback-timeout: {{to: [slow, open]}}
  fallback-garbage: {{to: [garbage, open]}}
  cookie-setter: {{to: [cookie]}}
  all-fail: {{to: [broken]}}
  cut: {{to: [cut]}}
  nokey-alias: {{to: [nokey, open]}}
  routed:
    route:
      - when: {{difficulty_at_least: 0.5}}
        to: [strong]
      - to: [open]
  always-closed:
    route:
      - when: {{difficulty_at_least: 0.0}}
        to: [strong]
      - to: [open]
  never-closed:
    route:
      - when: {{difficulty_at_least: 1.0}}
        to: [strong]
      - to: [open]
savings_reference: strong
"""


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited ({proc.returncode}):\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"gateway did not start:\n{log.read_text()[-4000:]}")


# Gateway base URL -> its log file (its policy file is `policy.yaml` beside it), and its
# process, for tests that read what it logged, edit its policy or signal it.
GATEWAY_LOGS: dict[str, Path] = {}
# Gateway base URL -> its process, for tests that signal it.
GATEWAY_PROCS: dict[str, subprocess.Popen[bytes]] = {}


@contextmanager
def run_gateway(policy_text: str, env: dict[str, str] | None = None, *, tmp: Path) -> Iterator[str]:
    """Start `gateway serve` as a real uvicorn server process; yield its base URL.

    Its policy and log go in a new folder inside `tmp` (a pytest temporary folder).
    """
    workdir = Path(tempfile.mkdtemp(prefix="gateway-", dir=tmp))
    policy = workdir / "policy.yaml"
    policy.write_text(policy_text)
    port = free_port()
    log = workdir / "gateway.log"
    full_env = {**os.environ, "GATEWAY_REDIS_URL": "", "GATEWAY_POLICY_RELOAD_S": "0.2"}
    full_env.update(env or {})
    command = [sys.executable, "-m", "gateway", "serve", "--policy", str(policy)]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=full_env, cwd=REPO
        )
    url = f"http://127.0.0.1:{port}"
    GATEWAY_LOGS[url] = log
    GATEWAY_PROCS[url] = proc
    try:
        _wait_ready(url, proc, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        GATEWAY_LOGS.pop(url, None)
        GATEWAY_PROCS.pop(url, None)


@pytest.fixture(scope="session")
def test_policy(upstreams: Upstreams) -> str:
    return TEST_POLICY.format(
        oai=upstreams.openai_url,
        # A host name, not an IP: HTTP clients only keep cookies for named hosts.
        oai_by_name=upstreams.openai_url.replace("127.0.0.1", "localhost"),
        anth=upstreams.anthropic_url,
        dead=free_port(),
    )


@pytest.fixture(scope="session")
def gateway(test_policy: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with run_gateway(test_policy, tmp=tmp_path_factory.mktemp("gateway")) as url:
        yield url


@pytest.fixture
def client(gateway: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway + "/v1", api_key="sk-test-tenant", max_retries=0) as c:
        yield c


class Connect(Protocol):
    """`connect(gateway_url, api_key, **options)`: an OpenAI client closed after the test."""

    def __call__(self, gateway: str, api_key: str = "k", **options: Any) -> openai.OpenAI: ...


@pytest.fixture
def connect() -> Iterator[Connect]:
    """OpenAI clients for a gateway, every one closed when the test ends (no leaked sockets)."""
    clients: list[openai.OpenAI] = []

    def make(gateway: str, api_key: str = "k", **options: Any) -> openai.OpenAI:
        options.setdefault("max_retries", 0)
        made = openai.OpenAI(base_url=gateway + "/v1", api_key=api_key, **options)
        clients.append(made)
        return made

    yield make
    for made in clients:
        made.close()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server the tests started (never the machine's); skips without `redis-server`."""
    with run_redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_db(redis_server: RedisServer) -> Iterator[RedisDb]:
    """A database of the test Redis for this test alone, emptied before and after."""
    with redis_server.lease() as db:
        yield db


@pytest.fixture
def redis_url(redis_db: RedisDb) -> str:
    """The URL of this test's own database (for `GATEWAY_REDIS_URL` and clients)."""
    return redis_db.url
