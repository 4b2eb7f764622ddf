"""The key table the request path reads, kept in memory and refreshed by version, and the admin
operations on it (create, change, rotate, revoke).

Authentication never waits on Redis: `tenant(digest, policy)` is two dict lookups. Each worker
reads the store's version token every `GATEWAY_KEYS_REFRESH_S` (0.5 s) and the whole table
only when it changed, so a revocation reaches every replica within a second; the worker that
made a change applies it at once.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from gateway.auth import KeyHasher, Tenant
from gateway.errors import GatewayError, InvalidRequest, NotFound, UpstreamUnavailable
from gateway.keys.records import KeyChange, KeyRecord, NewKey, changed, mint, new_record
from gateway.keys.store import KeyStore, MemoryStore, RedisStore
from gateway.metrics import Metrics
from gateway.policy import Policy
from gateway.settings import Settings

log = logging.getLogger("gateway.keys")

NO_SECRET = (
    "The key API is disabled: set GATEWAY_KEY_SECRET (the same on every replica) to enable it."
)
NO_SHARED_STORE = (
    "The key API needs Redis (GATEWAY_REDIS_URL) when several processes serve: a key made in "
    "one would be unknown to the others."
)


class VirtualKeys:
    """Keys made through `/admin/keys`, by digest, for the request path and the admin API."""

    def __init__(
        self,
        store: KeyStore,
        hasher: KeyHasher,
        *,
        refresh_s: float = 0.5,
        disabled: str | None = None,
        metrics: Metrics | None = None,
        retention_s: float = 30 * 86400,
        tombstone_s: float = 90 * 86400,
        purge_s: float = 300.0,
    ) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self.retention_s, self.tombstone_s, self.purge_s = retention_s, tombstone_s, purge_s
        # Why the key API refuses to work, when it does (a configuration problem).
        self.disabled = disabled
        self._hasher = hasher
        self._metrics = metrics
        self._version: str | None = None
        self._loaded = False
        self._records: dict[str, KeyRecord] = {}  # id → record
        self._active: dict[str, KeyRecord] = {}  # digest → record, revoked ones left out
        self._tenants: dict[str, Tenant] = {}  # digest → tenant under `_policy`
        self._policy: Policy | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, redis: Any, hasher: KeyHasher, metrics: Metrics
    ) -> VirtualKeys:
        """Redis-held keys when Redis is configured, this process's otherwise."""
        store: KeyStore = RedisStore(redis) if redis is not None else MemoryStore()
        disabled = None
        if not hasher.configured:
            disabled = NO_SECRET
        elif redis is None and settings.workers * settings.replicas > 1:
            disabled = NO_SHARED_STORE
        return cls(
            store,
            hasher,
            refresh_s=settings.keys_refresh_s,
            disabled=disabled,
            metrics=metrics,
            retention_s=settings.keys_retention_s,
            tombstone_s=settings.keys_tombstone_s,
            purge_s=settings.keys_purge_s,
        )

    # The request path.

    def tenant(self, digest: str, policy: Policy) -> Tenant | None:
        """The tenant of an active key under `policy`, or None (expiry is the caller's check)."""
        if policy is not self._policy:
            self._policy, self._tenants = policy, {}
        tenant = self._tenants.get(digest)
        if tenant is None:
            record = self._active.get(digest)
            if record is None:
                return None
            tenant = record.tenant(policy)
            if tenant is None:
                return None
            self._tenants[digest] = tenant
        return tenant

    # Keeping the table current.

    async def refresh(self) -> bool:
        """Read the table again if its version changed; True when it did."""
        if self.disabled is not None:
            return False
        if self._loaded and await self.store.version() == self._version:
            return False
        version, raw = await self.store.load()
        records = {}
        for key_id, text in raw.items():
            try:
                records[key_id] = KeyRecord.model_validate_json(text)
            except ValueError:
                log.warning("unreadable key record skipped", extra={"key_id": key_id})
        self._replace(version, records)
        return True

    async def purge(self, now: float | None = None) -> int:
        """Turn revoked and expired keys past their retention into tombstones, and delete
        tombstones past theirs (see `KeyRecord.purged`); the number of records changed.

        Reads the table in memory; each change is a compare-and-swap, so workers purging at
        once change each record once (the others' swaps fail and are skipped).
        """
        if self.disabled is not None:
            return 0
        now = time.time() if now is None else now
        done = 0
        for record in list(self._records.values()):
            kept = record.purged(now, self.retention_s, self.tombstone_s)
            if kept is record:
                continue
            raw = record.model_dump_json()
            new = kept.model_dump_json() if kept is not None else ""
            if await self.store.swap(record.id, new, raw):
                done += 1
        if done:
            await self.refresh()
        return done

    async def watch(self) -> None:
        """Refresh every `refresh_s` and purge every `purge_s`; while the store is away, keep
        serving the last table."""
        failing = False
        purge_at = time.monotonic() + self.purge_s * random.random()  # workers spread out
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                await self.refresh()
                if time.monotonic() >= purge_at:
                    purge_at = time.monotonic() + self.purge_s
                    await self.purge()
            except Exception:  # Redis trouble: the table read last keeps serving
                if self._metrics is not None:
                    self._metrics.cache_errors.labels("keys_refresh").inc()
                if not failing:
                    log.warning("key table refresh failed; serving the last one read")
                failing = True
            else:
                if failing:
                    log.info("key table refresh works again")
                failing = False

    def _replace(self, version: str | None, records: dict[str, KeyRecord]) -> None:
        active = {r.digest: r for r in records.values() if r.revoked_at is None and r.digest}
        # Unchanged keys keep their tenant object (the limiter memoises rules per tenant).
        kept = {d: t for d, t in self._tenants.items() if active.get(d) == self._active.get(d)}
        self._records, self._active, self._tenants = records, active, kept
        self._version, self._loaded = version, True

    def _apply(self, old: KeyRecord | None, record: KeyRecord) -> None:
        if old is not None:
            self._active.pop(old.digest, None)
            self._tenants.pop(old.digest, None)
        self._records[record.id] = record
        if record.revoked_at is None and record.digest:
            self._active[record.digest] = record

    # The admin API.

    async def create(self, spec: NewKey, policy: Policy) -> tuple[KeyRecord, str]:
        """A new key for a team of `policy`: its record and the clear key (shown once)."""
        self._check_enabled()
        key = mint()
        record = new_record(spec, policy, self._hasher.digest(key))
        await self._write(None, None, record)
        return record, key

    async def change(self, key_id: str, change: KeyChange, policy: Policy) -> KeyRecord:
        """Change a key's name, models, limits or expiry."""
        old, raw = await self._fetch(key_id)
        _check_live(old)
        record = changed(old, change, policy)
        await self._write(old, raw, record)
        return record

    async def rotate(self, key_id: str) -> tuple[KeyRecord, str]:
        """A new secret for a key (same id, limits and spend); the old secret stops working."""
        old, raw = await self._fetch(key_id)
        _check_live(old)
        if old.revoked_at is not None:
            raise InvalidRequest(
                f"Key {key_id!r} is revoked: create a new one.", param="id", code="key_revoked"
            )
        key = mint()
        update = {"digest": self._hasher.digest(key), "rotated_at": time.time()}
        record = old.model_copy(update=update)
        await self._write(old, raw, record)
        return record, key

    async def revoke(self, key_id: str) -> KeyRecord:
        """Revoke a key for good (again: no change)."""
        old, raw = await self._fetch(key_id)
        if old.revoked_at is not None:
            return old
        record = old.model_copy(update={"revoked_at": time.time()})
        await self._write(old, raw, record)
        return record

    async def get(self, key_id: str) -> KeyRecord:
        """One key, as stored now."""
        record, _ = await self._fetch(key_id)
        return record

    async def list(self, team: str | None = None) -> list[KeyRecord]:
        """Every key (revoked ones too), oldest first, optionally of one team."""
        self._check_enabled()
        with _store_errors():
            await self.refresh()
        records = (r for r in self._records.values() if team is None or r.team == team)
        return sorted(records, key=lambda r: (r.created, r.id))

    def _check_enabled(self) -> None:
        if self.disabled is not None:
            raise NotFound(self.disabled, code="key_api_disabled")

    async def _fetch(self, key_id: str) -> tuple[KeyRecord, str]:
        self._check_enabled()
        with _store_errors():
            raw = await self.store.get(key_id)
        if raw is None:
            raise NotFound(f"No key {key_id!r}.", param="id", code="key_not_found")
        return KeyRecord.model_validate_json(raw), raw

    async def _write(self, old: KeyRecord | None, raw: str | None, record: KeyRecord) -> None:
        with _store_errors():
            done = await self.store.swap(record.id, record.model_dump_json(), raw)
        if not done:
            raise InvalidRequest(
                "The key changed while this request was updating it; try again.",
                status=409,
                code="conflict",
            )
        self._apply(old, record)


def _check_live(record: KeyRecord) -> None:
    if record.purged_at is not None:
        raise InvalidRequest(
            f"Key {record.id!r} was purged (only its tombstone is left): create a new one.",
            param="id",
            code="key_purged",
        )


@contextmanager
def _store_errors() -> Iterator[None]:
    try:
        yield
    except GatewayError:
        raise
    except Exception as exc:  # Redis trouble: a 503 that says so, never a 500
        raise UpstreamUnavailable("The key store is unavailable.", code="keys_unavailable") from exc
