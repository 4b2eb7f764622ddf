"""Response cache against a real Redis: tenants, streaming replay, TTL, opt-outs, outages.

The Redis is one the tests start themselves (see tests/support/redis_server.py). Writes to
the cache happen off the reply path, so tests wait for an entry to reach Redis, not a while.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis
from openai.types.chat import ChatCompletionMessageParam

from tests.conftest import Connect, Upstreams, run_gateway
from tests.support.redis_server import RedisDb, RedisServer, run_redis_server

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


@pytest.fixture(scope="module")
def cache_db(redis_server: RedisServer) -> Iterator[RedisDb]:
    """The database this module's shared gateway uses (of the Redis the tests started)."""
    with redis_server.lease() as db:
        yield db


@pytest.fixture(scope="module")
def store(cache_db: RedisDb) -> Iterator[redis.Redis]:
    with cache_db.client() as client:
        yield client


@pytest.fixture(scope="module")
def cached_gateway(
    upstreams: Upstreams, cache_db: RedisDb, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    env = {"GATEWAY_REDIS_URL": cache_db.url, "GATEWAY_ADMIN_KEY": "admin"}
    policy = POLICY.format(oai=upstreams.openai_url)
    with run_gateway(policy, env, tmp=tmp_path_factory.mktemp("cached-gateway")) as url:
        yield url


def _wait_until(condition: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    """Poll `condition` until it is true; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(0.01)


def _stored(store: redis.Redis, text: str) -> list[bytes]:
    """The keys of the cache entries whose stored answer contains `text`."""
    needle = text.encode()
    return [k for k in store.scan_iter("gateway:cache:*") if needle in (store.get(k) or b"")]


def _wait_stored(store: redis.Redis, text: str, count: int = 1) -> list[bytes]:
    """Wait until `count` entries with `text` are in Redis; return their keys."""
    _wait_until(lambda: len(_stored(store, text)) >= count, f"{count} entries with {text!r}")
    keys = _stored(store, text)
    assert len(keys) == count, keys
    return keys


def _ask(client: openai.OpenAI, prompt: str, model: str = "m", **kwargs: Any) -> tuple[str, str]:
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": prompt}], **kwargs
    )
    return raw.headers["x-gateway-cache"], raw.parse().choices[0].message.content or ""


def test_hit_after_miss_and_upstream_not_called(
    cached_gateway: str, store: redis.Redis, upstreams: Upstreams, connect: Connect
) -> None:
    client = connect(cached_gateway, "tenant-a")
    prompt = f"cache me {uuid.uuid4()}"
    assert _ask(client, prompt) == ("miss", f"echo: {prompt}")
    before = upstreams.openai_state.count
    _wait_stored(store, f"echo: {prompt}")
    assert _ask(client, prompt) == ("hit", f"echo: {prompt}")
    assert upstreams.openai_state.count == before


def test_a_hit_carries_the_score_stored_with_the_answer(
    cached_gateway: str, store: redis.Redis, connect: Connect
) -> None:
    from gateway.cache import CachedAnswer

    client = connect(cached_gateway, "tenant-score")
    tag = str(uuid.uuid4())
    messages: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": f"Prove Fermat's little theorem {tag}"}
    ]
    raw = client.chat.completions.with_raw_response.create(model="m", messages=messages)
    assert raw.headers["x-gateway-cache"] == "miss"
    assert raw.headers["x-gateway-difficulty"] != "0.1234"
    # Give the stored entry a score the classifier would not compute for this prompt: the
    # hit must report it, not a fresh score of the same body.
    [key] = _wait_stored(store, tag)
    raw_entry = store.get(key)
    assert isinstance(raw_entry, bytes)
    entry = CachedAnswer.loads(raw_entry)
    assert entry is not None and entry.score is not None and entry.scorer
    store.set(key, dataclasses.replace(entry, score=0.1234).dumps(), keepttl=True)
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


def test_tenants_never_share_entries(
    cached_gateway: str, store: redis.Redis, connect: Connect
) -> None:
    prompt = f"same prompt {uuid.uuid4()}"
    one, two = connect(cached_gateway, "team-one"), connect(cached_gateway, "team-two")
    assert _ask(one, prompt)[0] == "miss"
    _wait_stored(store, f"echo: {prompt}")
    assert _ask(two, prompt)[0] == "miss"
    _wait_stored(store, f"echo: {prompt}", count=2)  # one entry per tenant
    assert _ask(one, prompt)[0] == "hit"


def test_streaming_replay_and_store(
    cached_gateway: str, store: redis.Redis, connect: Connect
) -> None:
    client = connect(cached_gateway, "tenant-s")
    prompt = f"stream cache {uuid.uuid4()}"
    # A streamed answer is stored once complete ...
    with client.chat.completions.with_streaming_response.create(
        model="m", messages=[{"role": "user", "content": prompt}], stream=True
    ) as response:
        assert response.headers["x-gateway-cache"] == "miss"
        text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
    assert text == f"echo: {prompt}"
    _wait_stored(store, prompt)
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


def test_ttl_expiry(cached_gateway: str, store: redis.Redis, connect: Connect) -> None:
    client = connect(cached_gateway, "tenant-t")
    prompt = f"ttl {uuid.uuid4()}"
    assert _ask(client, prompt, model="short-lived")[0] == "miss"
    [key] = _wait_stored(store, f"echo: {prompt}")
    assert 0 < store.pttl(key) <= 1000  # the model's ttl_s: 1, not the policy's 600
    assert _ask(client, prompt, model="short-lived")[0] == "hit"
    _wait_until(lambda: not store.exists(key), "the entry to expire", timeout=5)
    assert _ask(client, prompt, model="short-lived")[0] == "miss"


def test_opt_outs(cached_gateway: str, store: redis.Redis, connect: Connect) -> None:
    client = connect(cached_gateway, "tenant-o")
    prompt = f"opt out {uuid.uuid4()}"
    assert _ask(client, prompt, extra_headers={"x-gateway-cache": "bypass"})[0] == "bypass"
    assert _ask(client, prompt, extra_headers={"cache-control": "no-store"})[0] == "bypass"
    # A cacheable request after them, once stored, shows their writes would have landed too.
    barrier = f"barrier {uuid.uuid4()}"
    assert _ask(client, barrier)[0] == "miss"
    _wait_stored(store, f"echo: {barrier}")
    assert _stored(store, f"echo: {prompt}") == []  # nothing was stored by the opt-outs
    assert _ask(client, prompt)[0] == "miss"
    _wait_stored(store, f"echo: {prompt}")
    assert _ask(client, prompt, extra_headers={"cache-control": "no-cache"})[0] == "miss"
    assert _ask(client, prompt, temperature=0.9)[0] == "bypass"  # sampled: not deterministic
    assert _ask(client, prompt, model="uncached")[0] == "bypass"
    assert _ask(client, prompt)[0] == "hit"


def test_admin_purge_by_tenant(cached_gateway: str, store: redis.Redis, connect: Connect) -> None:
    client = connect(cached_gateway, "tenant-p")
    prompt = f"purge {uuid.uuid4()}"
    _ask(client, prompt)
    _wait_stored(store, f"echo: {prompt}")
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
    assert _stored(store, f"echo: {prompt}") == []
    assert _ask(client, prompt)[0] == "miss"


def test_policy_change_invalidates(
    upstreams: Upstreams, redis_db: RedisDb, tmp_path: Path, connect: Connect
) -> None:
    text = POLICY.format(oai=upstreams.openai_url)
    with (
        redis_db.client() as store,
        run_gateway(text, {"GATEWAY_REDIS_URL": redis_db.url}, tmp=tmp_path) as url,
    ):
        client = connect(url, "tenant-v")
        prompt = f"policy {uuid.uuid4()}"
        _ask(client, prompt)
        _wait_stored(store, f"echo: {prompt}")
        assert _ask(client, prompt)[0] == "hit"
        policy_file = Path(httpx.get(url + "/readyz").json()["policy_file"])
        policy_file.write_text(text.replace("ttl_s: 600", "ttl_s: 300"))
        _wait_until(lambda: _ask(client, prompt)[0] != "hit", "the policy change", timeout=10)


def test_redis_outage_loses_no_request(
    upstreams: Upstreams, tmp_path: Path, connect: Connect
) -> None:
    # A server of its own: this test kills it.
    with run_redis_server(tmp_path) as server, server.db().client() as store:
        env = {"GATEWAY_REDIS_URL": server.db().url}
        policy = POLICY.format(oai=upstreams.openai_url)
        with run_gateway(policy, env, tmp=tmp_path) as url:
            client = connect(url, "tenant-r")
            prompt = f"outage {uuid.uuid4()}"
            assert _ask(client, prompt)[0] == "miss"
            _wait_stored(store, f"echo: {prompt}")
            assert _ask(client, prompt)[0] == "hit"
            server.kill()
            for i in range(30):  # every request still answered while Redis is gone
                state, content = _ask(client, f"{prompt} {i}")
                assert content == f"echo: {prompt} {i}" and state == "miss"
            errors = httpx.get(url + "/metrics").text
            assert 'gateway_cache_errors_total{operation="get"}' in errors
            server.start()
            again = f"{prompt} after"
            _ask(client, again)
            _wait_until(
                lambda: _ask(client, again)[0] == "hit", "the cache to resume after Redis returned"
            )


def _ask_with_system(client: openai.OpenAI, system: str, prompt: str) -> tuple[str, str]:
    raw = client.chat.completions.with_raw_response.create(
        model="semantic",
        messages=[{"role": "system", "content": system}, {"role": "user", "content": prompt}],
    )
    return raw.headers["x-gateway-cache"], raw.parse().choices[0].message.content or ""


def test_semantic_hits_stay_within_context_and_tenant(
    cached_gateway: str, store: redis.Redis, connect: Connect
) -> None:
    tag = uuid.uuid4().hex[:8]
    client = connect(cached_gateway, "tenant-sem")
    system = f"You answer geography questions. {tag}"
    original = "What is the capital city of France?"
    assert _ask_with_system(client, system, original)[0] == "miss"
    # The index entry is added with the write; the answer it points at must be in Redis.
    _wait_stored(store, f"echo: {original}")  # this module's database: no other test's entry
    # A re-cased, re-punctuated turn in the same context is answered from the cache.
    assert _ask_with_system(client, system, "  what is the capital city of france") == (
        "hit",
        f"echo: {original}",
    )
    # A different question, a different system prompt or another tenant never hits.
    assert _ask_with_system(client, system, "What is the capital city of Germany?")[0] == "miss"
    assert _ask_with_system(client, system + " Be terse.", original)[0] == "miss"
    other = connect(cached_gateway, "tenant-sem-other")
    assert _ask_with_system(other, system, "  what is the capital city of france")[0] == "miss"
    metrics = httpx.get(cached_gateway + "/metrics").text
    assert 'gateway_cache_requests_total{kind="semantic",model="semantic",result="hit"}' in metrics


def test_redis_stopped_and_restarted_under_load(
    upstreams: Upstreams, tmp_path: Path, connect: Connect
) -> None:
    """Eight clients keep asking (half repeats, half new) while Redis dies and comes back."""
    stop = threading.Event()
    results: list[tuple[str, str, str]] = []
    failures: list[BaseException] = []

    def load(worker: int, url: str) -> None:
        client = connect(url, f"tenant-load-{worker % 2}")
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

    def hits_since(start: int) -> bool:
        return bool(failures) or any(state == "hit" for _, state, _ in results[start:])

    def answered_since(start: int, count: int) -> bool:
        return bool(failures) or len(results) >= start + count

    with run_redis_server(tmp_path) as server:
        env = {"GATEWAY_REDIS_URL": server.db().url}
        with run_gateway(POLICY.format(oai=upstreams.openai_url), env, tmp=tmp_path) as url:
            threads = [threading.Thread(target=load, args=(w, url)) for w in range(8)]
            for thread in threads:
                thread.start()
            try:
                _wait_until(lambda: hits_since(0), "hits while Redis is up", timeout=20)
                server.kill()
                down = len(results)
                _wait_until(lambda: answered_since(down, 50), "answers while Redis is down", 20)
                server.start()
                up = len(results)
                _wait_until(lambda: hits_since(up), "hits after Redis returned", timeout=20)
            finally:
                stop.set()
                for thread in threads:
                    thread.join(30)
    assert not failures, failures[:3]
    assert all(content == f"echo: {prompt}" for prompt, _, content in results)
