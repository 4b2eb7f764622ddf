"""Response cache against a real Redis: tenants, streaming replay, TTL, opt-outs, outages."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import redis

from tests.conftest import Upstreams, run_gateway
from tests.support.model_servers import free_port

POLICY = """
backends:
  open: {{provider: openai, base_url: "{oai}/v1", tier: open,
          price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}}}
models:
  "*": {{to: [open]}}
  short-lived:
    to: [open]
    cache: {{ttl_s: 1}}
  uncached:
    to: [open]
    cache: {{enabled: false}}
  semantic:
    to: [open]
    cache: {{semantic: true, semantic_threshold: 0.9}}
cache: {{enabled: true, ttl_s: 600}}
"""


def _redis_cli(*args: str, port: int = 6379) -> str:
    return subprocess.run(
        ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, check=True
    ).stdout


@pytest.fixture(scope="module")
def redis_db() -> Iterator[int]:
    if shutil.which("redis-cli") is None:
        pytest.fail("redis-cli not found: install redis-server (.ci/run does)")
    db = 11
    _redis_cli("-n", str(db), "flushdb")
    yield db
    _redis_cli("-n", str(db), "flushdb")


@pytest.fixture(scope="module")
def cached_gateway(
    upstreams: Upstreams, redis_db: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    env = {"GATEWAY_REDIS_URL": f"redis://127.0.0.1:6379/{redis_db}", "GATEWAY_ADMIN_KEY": "admin"}
    with run_gateway(POLICY.format(oai=upstreams.openai_url), env) as url:
        yield url


def _client(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)


def _ask(client: openai.OpenAI, prompt: str, model: str = "m", **kwargs: object) -> tuple[str, str]:
    raw = client.chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        **kwargs,  # type: ignore[arg-type]
    )
    return raw.headers["x-gateway-cache"], raw.parse().choices[0].message.content or ""


def test_hit_after_miss_and_upstream_not_called(cached_gateway: str, upstreams: Upstreams) -> None:
    client = _client(cached_gateway, "tenant-a")
    prompt = f"cache me {uuid.uuid4()}"
    assert _ask(client, prompt) == ("miss", f"echo: {prompt}")
    before = upstreams.openai_state.count
    time.sleep(0.1)  # the write is off the response path
    assert _ask(client, prompt) == ("hit", f"echo: {prompt}")
    assert upstreams.openai_state.count == before


def test_a_hit_carries_the_score_stored_with_the_answer(cached_gateway: str, redis_db: int) -> None:
    from gateway.cache import CachedAnswer

    client = _client(cached_gateway, "tenant-score")
    tag = str(uuid.uuid4())
    messages = [{"role": "user", "content": f"Prove Fermat's little theorem {tag}"}]
    raw = client.chat.completions.with_raw_response.create(model="m", messages=messages)
    assert raw.headers["x-gateway-cache"] == "miss"
    assert raw.headers["x-gateway-difficulty"] != "0.1234"
    time.sleep(0.1)  # the write is off the response path
    # Give the stored entry a score the classifier would not compute for this prompt: the
    # hit must report it, not a fresh score of the same body.
    store = redis.Redis(port=6379, db=redis_db)
    keys = [k for k in store.scan_iter("gateway:cache:*") if tag.encode() in (store.get(k) or b"")]
    assert len(keys) == 1
    entry = CachedAnswer.loads(store.get(keys[0]) or b"")
    assert entry is not None and entry.score is not None and entry.scorer
    store.set(keys[0], dataclasses.replace(entry, score=0.1234).dumps(), keepttl=True)
    raw = client.chat.completions.with_raw_response.create(model="m", messages=messages)
    assert raw.headers["x-gateway-cache"] == "hit"
    assert raw.headers["x-gateway-difficulty"] == "0.1234"


def test_entries_without_a_score_still_load() -> None:
    from gateway.cache import CachedAnswer

    old = CachedAnswer.loads(b'["open","open",3,4]\n{"id":"x"}')
    assert old is not None and old.score is None and old.body == b'{"id":"x"}'
    new = CachedAnswer(b"{}", "open", "open", 3, 4, 0.25, "difficulty-v2-abc")
    assert CachedAnswer.loads(new.dumps()) == new
    assert CachedAnswer.loads(b'["open","open",3]\n{}') is None


def test_tenants_never_share_entries(cached_gateway: str) -> None:
    prompt = f"same prompt {uuid.uuid4()}"
    assert _ask(_client(cached_gateway, "team-one"), prompt)[0] == "miss"
    time.sleep(0.1)
    assert _ask(_client(cached_gateway, "team-two"), prompt)[0] == "miss"
    time.sleep(0.1)
    assert _ask(_client(cached_gateway, "team-one"), prompt)[0] == "hit"


def test_streaming_replay_and_store(cached_gateway: str) -> None:
    client = _client(cached_gateway, "tenant-s")
    prompt = f"stream cache {uuid.uuid4()}"
    # A streamed answer is stored once complete ...
    with client.chat.completions.with_streaming_response.create(
        model="m", messages=[{"role": "user", "content": prompt}], stream=True
    ) as response:
        assert response.headers["x-gateway-cache"] == "miss"
        text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
    assert text == f"echo: {prompt}"
    time.sleep(0.1)
    # ... served whole to a non-streaming client ...
    assert _ask(client, prompt) == ("hit", f"echo: {prompt}")
    # ... and replayed as a valid SSE stream with usage, parsed by the SDK.
    with client.chat.completions.with_streaming_response.create(
        model="m",
        messages=[{"role": "user", "content": prompt}],
        stream=True,
        stream_options={"include_usage": True},
    ) as response:
        assert response.headers["x-gateway-cache"] == "hit"
        chunks = list(response.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 18
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_ttl_expiry(cached_gateway: str) -> None:
    client = _client(cached_gateway, "tenant-t")
    prompt = f"ttl {uuid.uuid4()}"
    assert _ask(client, prompt, model="short-lived")[0] == "miss"
    time.sleep(0.1)
    assert _ask(client, prompt, model="short-lived")[0] == "hit"
    time.sleep(1.5)
    assert _ask(client, prompt, model="short-lived")[0] == "miss"


def test_opt_outs(cached_gateway: str) -> None:
    client = _client(cached_gateway, "tenant-o")
    prompt = f"opt out {uuid.uuid4()}"
    assert _ask(client, prompt, extra_headers={"x-gateway-cache": "bypass"})[0] == "bypass"
    assert _ask(client, prompt, extra_headers={"cache-control": "no-store"})[0] == "bypass"
    time.sleep(0.1)
    assert _ask(client, prompt)[0] == "miss"  # nothing was stored by the opt-outs
    time.sleep(0.1)
    assert _ask(client, prompt, extra_headers={"cache-control": "no-cache"})[0] == "miss"
    assert _ask(client, prompt, temperature=0.9)[0] == "bypass"  # sampled: not deterministic
    assert _ask(client, prompt, model="uncached")[0] == "bypass"
    assert _ask(client, prompt)[0] == "hit"


def test_admin_purge_by_tenant(cached_gateway: str) -> None:
    client = _client(cached_gateway, "tenant-p")
    prompt = f"purge {uuid.uuid4()}"
    _ask(client, prompt)
    time.sleep(0.1)
    assert _ask(client, prompt)[0] == "hit"
    denied = httpx.post(cached_gateway + "/admin/cache/purge", json={"model": "*"})
    assert denied.status_code == 401
    # Purge everything of model "*" (the catch-all entry this tenant used).
    response = httpx.post(
        cached_gateway + "/admin/cache/purge",
        json={"model": "*"},
        headers={"authorization": "Bearer admin"},
    )
    assert response.status_code == 200 and response.json()["deleted"] >= 1
    assert _ask(client, prompt)[0] == "miss"


def test_policy_change_invalidates(upstreams: Upstreams, redis_db: int, tmp_path: Path) -> None:
    env = {"GATEWAY_REDIS_URL": f"redis://127.0.0.1:6379/{redis_db}"}
    text = POLICY.format(oai=upstreams.openai_url)
    with run_gateway(text, env) as url:
        client = _client(url, "tenant-v")
        prompt = f"policy {uuid.uuid4()}"
        _ask(client, prompt)
        time.sleep(0.1)
        assert _ask(client, prompt)[0] == "hit"
        policy_file = Path(httpx.get(url + "/readyz").json()["policy_file"])
        policy_file.write_text(text.replace("ttl_s: 600", "ttl_s: 300"))
        deadline = time.monotonic() + 10
        while _ask(client, prompt)[0] == "hit":
            assert time.monotonic() < deadline, "the policy change was not picked up"
            time.sleep(0.3)


def test_redis_outage_loses_no_request(upstreams: Upstreams, tmp_path: Path) -> None:
    port = free_port()
    server = [
        "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    redis = subprocess.Popen(server, stdout=subprocess.DEVNULL, cwd=tmp_path)
    try:
        _wait_redis(port)
        env = {"GATEWAY_REDIS_URL": f"redis://127.0.0.1:{port}/0"}
        with run_gateway(POLICY.format(oai=upstreams.openai_url), env) as url:
            client = _client(url, "tenant-r")
            prompt = f"outage {uuid.uuid4()}"
            assert _ask(client, prompt)[0] == "miss"
            time.sleep(0.1)
            assert _ask(client, prompt)[0] == "hit"
            redis.kill()
            redis.wait()
            for i in range(30):  # every request still answered while Redis is gone
                state, content = _ask(client, f"{prompt} {i}")
                assert content == f"echo: {prompt} {i}" and state == "miss"
            errors = httpx.get(url + "/metrics").text
            assert 'gateway_cache_errors_total{operation="get"}' in errors
            redis = subprocess.Popen(server, stdout=subprocess.DEVNULL, cwd=tmp_path)
            _wait_redis(port)
            deadline = time.monotonic() + 10
            again = f"{prompt} after"
            _ask(client, again)
            while _ask(client, again)[0] != "hit":
                assert time.monotonic() < deadline, "the cache did not resume after Redis returned"
                time.sleep(0.2)
    finally:
        redis.kill()
        redis.wait()


def _wait_redis(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if _redis_cli("ping", port=port).strip() == "PONG":
                return
        except subprocess.CalledProcessError:
            pass
        time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def _ask_with_system(client: openai.OpenAI, system: str, prompt: str) -> tuple[str, str]:
    raw = client.chat.completions.with_raw_response.create(
        model="semantic",
        messages=[{"role": "system", "content": system}, {"role": "user", "content": prompt}],
    )
    return raw.headers["x-gateway-cache"], raw.parse().choices[0].message.content or ""


def test_semantic_hits_stay_within_context_and_tenant(cached_gateway: str) -> None:
    tag = uuid.uuid4().hex[:8]
    client = _client(cached_gateway, "tenant-sem")
    system = f"You answer geography questions. {tag}"
    original = "What is the capital city of France?"
    assert _ask_with_system(client, system, original)[0] == "miss"
    time.sleep(0.1)
    # A re-cased, re-punctuated turn in the same context is answered from the cache.
    assert _ask_with_system(client, system, "  what is the capital city of france") == (
        "hit",
        f"echo: {original}",
    )
    # A different question, a different system prompt or another tenant never hits.
    assert _ask_with_system(client, system, "What is the capital city of Germany?")[0] == "miss"
    assert _ask_with_system(client, system + " Be terse.", original)[0] == "miss"
    other = _client(cached_gateway, "tenant-sem-other")
    assert _ask_with_system(other, system, "  what is the capital city of france")[0] == "miss"
    metrics = httpx.get(cached_gateway + "/metrics").text
    assert 'gateway_cache_requests_total{kind="semantic",model="semantic",result="hit"}' in metrics


def test_redis_stopped_and_restarted_under_load(upstreams: Upstreams, tmp_path: Path) -> None:
    """Eight clients keep asking (half repeats, half new) while Redis dies and comes back."""
    port = free_port()
    server = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    redis = subprocess.Popen(server, stdout=subprocess.DEVNULL, cwd=tmp_path)
    stop = threading.Event()
    results: list[tuple[str, str, str]] = []
    failures: list[BaseException] = []

    def load(worker: int, url: str) -> None:
        client = _client(url, f"tenant-load-{worker % 2}")
        i = 0
        while not stop.is_set():
            prompt = f"load {worker} {i % 5 if i % 2 else i}"
            try:
                state, content = _ask(client, prompt)
            except BaseException as exc:  # any failure is a lost request
                failures.append(exc)
                return
            results.append((prompt, state, content))
            i += 1

    try:
        _wait_redis(port)
        env = {"GATEWAY_REDIS_URL": f"redis://127.0.0.1:{port}/0"}
        with run_gateway(POLICY.format(oai=upstreams.openai_url), env) as url:
            threads = [threading.Thread(target=load, args=(w, url)) for w in range(8)]
            for thread in threads:
                thread.start()
            time.sleep(1.5)
            redis.kill()
            redis.wait()
            time.sleep(1.5)
            redis = subprocess.Popen(server, stdout=subprocess.DEVNULL, cwd=tmp_path)
            _wait_redis(port)
            time.sleep(1.5)
            stop.set()
            for thread in threads:
                thread.join(30)
    finally:
        stop.set()
        redis.kill()
        redis.wait()
    assert not failures, failures[:3]
    assert len(results) > 50
    assert all(content == f"echo: {prompt}" for prompt, _, content in results)
    states = [state for _, state, _ in results]
    assert "hit" in states[: len(states) // 3] and "hit" in states[-len(states) // 4 :]
