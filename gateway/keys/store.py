"""Where key records live: one Redis hash (shared by every replica) or this process.

    gateway:keys:{keys}:records   hash: key id → the record as JSON (a digest, never a key)
    gateway:keys:{keys}:version   a random token, replaced by every write

Both keys carry the hash tag `{keys}`, so the write script touches one Redis Cluster slot.
Readers compare the version token with the one they loaded (one GET), and read the whole hash
again only when it differs. A token, not a counter: a Redis that restarted empty and was
written to again can never come back to a version a reader already has.
"""

from __future__ import annotations

import secrets
from typing import Any, Protocol

PREFIX = "gateway:keys:{keys}"
RECORDS = PREFIX + ":records"
VERSION = PREFIX + ":version"

# Compare and swap one record; replace the version token. ARGV: id, new JSON ("": delete the
# record), expected JSON ("" when the id must be new), new version token.
_SWAP = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if (current or '') ~= ARGV[3] then return 0 end
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
redis.call('SET', KEYS[2], ARGV[4])
return 1
"""


class KeyStore(Protocol):
    """Records by id, with a version token that changes on every write."""

    kind: str

    async def version(self) -> str | None:
        """The current version token (None before the first write)."""
        ...

    async def load(self) -> tuple[str | None, dict[str, str]]:
        """The version token and every record, read together."""
        ...

    async def get(self, key_id: str) -> str | None:
        """One record's JSON, or None."""
        ...

    async def swap(self, key_id: str, new: str, expected: str | None) -> bool:
        """Write `new` ("": delete) if the stored record is still `expected` (None: absent)."""
        ...


class MemoryStore:
    """This process only: lost on restart, unseen by other workers."""

    kind = "memory"

    def __init__(self) -> None:
        self._records: dict[str, str] = {}
        self._version: str | None = None

    async def version(self) -> str | None:
        """The current version token."""
        return self._version

    async def load(self) -> tuple[str | None, dict[str, str]]:
        """The version token and every record."""
        return self._version, dict(self._records)

    async def get(self, key_id: str) -> str | None:
        """One record's JSON, or None."""
        return self._records.get(key_id)

    async def swap(self, key_id: str, new: str, expected: str | None) -> bool:
        """Write `new` if the stored record is still `expected`."""
        if self._records.get(key_id) != expected:
            return False
        if new:
            self._records[key_id] = new
        else:
            del self._records[key_id]
        self._version = secrets.token_hex(8)
        return True


class RedisStore:
    """One hash in Redis, shared by every process that uses this Redis."""

    kind = "redis"

    def __init__(self, redis: Any) -> None:
        self._redis = redis
        self._swap = redis.register_script(_SWAP)

    async def version(self) -> str | None:
        """The current version token."""
        return _text(await self._redis.get(VERSION))

    async def load(self) -> tuple[str | None, dict[str, str]]:
        """The version token and every record, in one transaction (one round trip)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.get(VERSION)
            pipe.hgetall(RECORDS)
            version, records = await pipe.execute()
        return _text(version), {_str(k): _str(v) for k, v in records.items()}

    async def get(self, key_id: str) -> str | None:
        """One record's JSON, or None."""
        return _text(await self._redis.hget(RECORDS, key_id))

    async def swap(self, key_id: str, new: str, expected: str | None) -> bool:
        """Write `new` if the stored record is still `expected`, atomically."""
        token = secrets.token_hex(8)
        done = await self._swap(keys=[RECORDS, VERSION], args=[key_id, new, expected or "", token])
        return bool(done)


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _text(value: bytes | str | None) -> str | None:
    return None if value is None else _str(value)
