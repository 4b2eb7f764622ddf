"""The key store on a real Redis (the tests' own): compare and swap, version tokens, one hash
tag; and what the key table does while Redis is away."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.auth import KeyHasher, KeyRing
from gateway.errors import InvalidRequest, UpstreamUnavailable
from gateway.keys import NewKey, VirtualKeys
from gateway.keys.store import RECORDS, VERSION, MemoryStore, RedisStore
from gateway.policy import parse_policy
from tests.support.model_servers import free_port
from tests.support.redis_server import RedisDb

POLICY = """
backends:
  open: {provider: openai, base_url: "http://127.0.0.1:1/v1"}
models:
  m: {to: [open]}
teams:
  apps: {}
"""
POLICY_OBJ = parse_policy(POLICY, "p.yaml").policy
HASHER = KeyHasher(b"secret-for-store-tests")


def _keys(client: aioredis.Redis) -> VirtualKeys:
    return VirtualKeys(RedisStore(client), HASHER)


async def test_swap_is_compare_and_swap_with_a_new_version_each_time(redis_db: RedisDb) -> None:
    client = aioredis.from_url(redis_db.url)
    try:
        store = RedisStore(client)
        assert await store.version() is None
        assert await store.swap("k1", '{"a":1}', None)
        first = await store.version()
        assert not await store.swap("k1", '{"a":2}', None)  # already there
        assert not await store.swap("k1", '{"a":2}', '{"a":0}')  # not what the writer read
        assert await store.version() == first
        assert await store.swap("k1", '{"a":2}', '{"a":1}')
        version, records = await store.load()
        assert version not in (None, first) and records == {"k1": '{"a":2}'}
        # One hash tag: one Redis Cluster slot.
        assert {RECORDS, VERSION} == {k.decode() for k in await client.keys("gateway:keys:*")}
        assert all("{keys}" in name for name in (RECORDS, VERSION))
    finally:
        await client.aclose()


async def test_a_second_table_sees_changes_and_a_stale_write_is_a_409(redis_db: RedisDb) -> None:
    client = aioredis.from_url(redis_db.url)
    try:
        writer, reader = _keys(client), _keys(client)
        record, key = await writer.create(NewKey(team="apps"), POLICY_OBJ)
        ring = KeyRing(POLICY_OBJ, HASHER, reader)
        assert await reader.refresh() and not await reader.refresh()  # no change, no reload
        assert ring.authenticate(f"Bearer {key}").key_id == record.id
        _, raw = await writer._fetch(record.id)
        await reader.revoke(record.id)
        with pytest.raises(InvalidRequest) as info:  # `writer` read the key before the revoke
            await writer._write(record, raw, record.model_copy(update={"name": "late"}))
        assert info.value.http_status == 409
        assert (await writer.get(record.id)).revoked_at is not None
    finally:
        await client.aclose()


async def test_while_redis_is_away_known_keys_work_and_the_api_says_503() -> None:
    client = aioredis.from_url(
        f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5, socket_timeout=0.5
    )
    try:
        keys = VirtualKeys(MemoryStore(), HASHER)
        record, key = await keys.create(NewKey(team="apps"), POLICY_OBJ)
        keys.store = RedisStore(client)  # the store goes away
        with pytest.raises(RedisError):
            await keys.refresh()
        ring = KeyRing(POLICY_OBJ, HASHER, keys)
        assert ring.authenticate(f"Bearer {key}").key_id == record.id  # the table read last
        with pytest.raises(UpstreamUnavailable) as info:
            await keys.create(NewKey(team="apps"), POLICY_OBJ)
        assert info.value.code == "keys_unavailable" and info.value.http_status == 503
        with pytest.raises(UpstreamUnavailable):
            await keys.list()
    finally:
        await client.aclose()
