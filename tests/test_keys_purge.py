"""Revoked and expired keys leave Redis: whole for the retention period, then a tombstone
(no digest, models or limits) for the tombstone period, then nothing. On a real Redis, with
two key tables purging at once, and end to end on a real gateway process."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import redis.asyncio as aioredis

from gateway.auth import KeyHasher, KeyRing
from gateway.errors import InvalidRequest
from gateway.keys import KeyChange, NewKey, VirtualKeys
from gateway.keys.store import RECORDS, RedisStore
from gateway.policy import parse_policy
from tests.conftest import Upstreams, run_gateway
from tests.support.keys import ADMIN, POLICY, SECRET, admin, create, until
from tests.support.redis_server import RedisDb

POLICY_OBJ = parse_policy(POLICY.format(oai="http://127.0.0.1:1"), "p.yaml").policy
HASHER = KeyHasher(b"secret-for-purge-tests")
DAY = 86_400.0


def _table(client: aioredis.Redis) -> VirtualKeys:
    return VirtualKeys(RedisStore(client), HASHER, retention_s=7 * DAY, tombstone_s=30 * DAY)


async def _stored(client: aioredis.Redis) -> dict[str, dict[str, object]]:
    raw = await client.hgetall(RECORDS)
    return {k.decode(): orjson.loads(v) for k, v in raw.items()}


async def test_revoked_and_expired_keys_become_tombstones_then_go(redis_db: RedisDb) -> None:
    client = aioredis.from_url(redis_db.url)
    try:
        a, b = _table(client), _table(client)  # two workers sharing one Redis
        now = time.time()
        live, live_key = await a.create(NewKey(team="apps", name="live"), POLICY_OBJ)
        gone, _ = await a.create(NewKey(team="apps", name="revoked"), POLICY_OBJ)
        spec = {"team": "apps", "name": "expiring", "expires_at": now + DAY}
        expiring, _ = await a.create(NewKey.model_validate(spec), POLICY_OBJ)
        await a.change(gone.id, KeyChange(limits={"requests_per_minute": 5}), POLICY_OBJ)
        revoked = await a.revoke(gone.id)
        assert revoked.revoked_at is not None
        await b.refresh()

        # Within the retention period nothing changes.
        assert await a.purge(revoked.revoked_at + 7 * DAY - 1) == 0
        assert set(await _stored(client)) == {live.id, gone.id, expiring.id}

        # Past it (for the revoked key; the expiring one expired a day later): tombstones,
        # made once although both tables purge.
        later = revoked.revoked_at + 7 * DAY + DAY + 1
        counts = await asyncio.gather(a.purge(later), b.purge(later))
        assert sum(counts) == 2
        stored = await _stored(client)
        assert set(stored) == {live.id, gone.id, expiring.id}
        for key_id in (gone.id, expiring.id):
            tomb = stored[key_id]
            assert tomb["digest"] == "" and tomb["limits"] is None
            assert tomb["allowed_models"] is None and tomb["purged_at"] == later
            assert tomb["team"] == "apps" and tomb["created"] >= now - 1
        assert stored[gone.id]["revoked_at"] == revoked.revoked_at
        assert stored[live.id]["digest"] == HASHER.digest(live_key)  # untouched
        # A tombstone authenticates nothing (not even an empty digest) and cannot be revived.
        ring = KeyRing(POLICY_OBJ, HASHER, b)
        await b.refresh()
        assert ring.authenticate(f"Bearer {live_key}").key_id == live.id
        assert b.tenant("", POLICY_OBJ) is None
        for revive in (b.rotate(gone.id), b.change(expiring.id, KeyChange(name="x"), POLICY_OBJ)):
            try:
                await revive
            except InvalidRequest as exc:
                assert exc.code == "key_purged"
            else:
                raise AssertionError("a tombstone was changed")
        shown = (await b.get(gone.id)).public(later)
        assert shown["status"] == "revoked" and shown["purged_at"] == int(later)

        # The tombstone stays for its own period, then the record is gone for good.
        assert await b.purge(later + 30 * DAY - 1) == 0
        assert await a.purge(later + 30 * DAY) == 2
        assert set(await _stored(client)) == {live.id}
        await b.refresh()
        assert [r.id for r in await b.list()] == [live.id]
    finally:
        await client.aclose()


def test_a_gateway_purges_a_revoked_key(
    redis_db: RedisDb, upstreams: Upstreams, tmp_path: Path
) -> None:
    env = {
        "GATEWAY_REDIS_URL": redis_db.url,
        "GATEWAY_ADMIN_KEY": ADMIN,
        "GATEWAY_KEY_SECRET": SECRET,
        "GATEWAY_KEYS_RETENTION_S": "0.5",
        "GATEWAY_KEYS_TOMBSTONE_S": "0.5",
        "GATEWAY_KEYS_PURGE_S": "0.1",
    }
    with run_gateway(POLICY.format(oai=upstreams.openai_url), env, tmp=tmp_path) as url:
        made = create(url, team="apps")
        kept = create(url, team="apps")
        admin(url, "DELETE", f"/admin/keys/{made['id']}")

        def record() -> dict[str, object] | None:
            with redis_db.client() as r:
                raw = r.hget(RECORDS, made["id"])
            return orjson.loads(raw) if raw is not None else None

        until(lambda: (record() or {}).get("purged_at") is not None, within=10)
        assert (record() or {})["digest"] == ""
        until(lambda: record() is None, within=10)
        assert admin(url, "GET", f"/admin/keys/{made['id']}").status_code == 404
        assert admin(url, "GET", f"/admin/keys/{kept['id']}").json()["status"] == "active"
