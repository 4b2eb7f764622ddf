"""API keys → tenants. Without teams in the policy, every bearer token is its own tenant.

Keys are looked up by a keyed hash (HMAC-SHA256 with `GATEWAY_KEY_SECRET`), never by the key
itself: first the keys the policy declares, then those created through `/admin/keys`
(`gateway.keys`), both in memory, so authenticating costs one HMAC and a dict lookup.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Protocol

from gateway.errors import AuthenticationFailed
from gateway.policy import Limits, Policy

ANONYMOUS = "anonymous"
DEFAULT_TEAM = "default"
# Without GATEWAY_KEY_SECRET, policy keys are hashed with this public value: digests (and the
# key ids and cache partitions made from them) then stay the same in every process, but are
# no better than an unsalted hash. The key API refuses to work with it.
FALLBACK_SECRET = b"gateway-key-secret-unset"


@dataclass(frozen=True, slots=True)
class Tenant:
    """Who is calling: the team (a metrics label), the cache partition and the limits.

    `key_id` names the caller's key without revealing it (a digest prefix, or the id of a key
    made through the API) for the limiter; `key_limits` apply to that key alone, `limits` to
    the whole team. `key_name` is what records and logs show: the API key's id, or where the
    policy declares the key (`search.keys[0]`); never the key, nor any hash of it.
    """

    team: str
    partition: str
    allowed_models: frozenset[str] | None = None
    limits: Limits | None = None
    key_id: str = ""
    key_limits: Limits | None = None
    # Epoch seconds after which the key is refused (keys made through the API only).
    expires_at: float | None = None
    key_name: str = ""


class KeyHasher:
    """HMAC-SHA256 of keys with the server secret, as hex."""

    def __init__(self, secret: bytes | None = None) -> None:
        self.configured = bool(secret)
        self._mac = hmac.new(secret or FALLBACK_SECRET, digestmod=hashlib.sha256)

    def digest(self, key: str) -> str:
        """The keyed hash of `key` (64 hex characters)."""
        mac = self._mac.copy()  # the secret's pads are hashed once, not per request
        mac.update(key.encode())
        return mac.hexdigest()


class KeyLookup(Protocol):
    """Keys made through the API, by digest (gateway.keys.VirtualKeys)."""

    def tenant(self, digest: str, policy: Policy) -> Tenant | None:
        """The tenant of an active key for the current policy, or None."""
        ...


class KeyRing:
    """Looks up callers by the hash of their key, never by the key itself."""

    def __init__(
        self, policy: Policy, hasher: KeyHasher | None = None, virtual: KeyLookup | None = None
    ) -> None:
        self.required = bool(policy.teams)
        self.hasher = hasher or KeyHasher()
        self.virtual = virtual
        self._policy = policy
        self._by_digest: dict[str, Tenant] = {}
        for team, spec in policy.teams.items():
            allowed = frozenset(spec.allowed_models) if spec.allowed_models is not None else None
            for i, key in enumerate(spec.keys):
                digest = self.hasher.digest(key)
                tenant = Tenant(
                    team,
                    "team:" + team,
                    allowed,
                    spec.limits,
                    digest[:16],
                    spec.key_limits,
                    key_name=f"{team}.keys[{i}]",
                )
                self._by_digest[digest] = tenant
        self._anonymous: dict[str, Tenant] = {}

    def authenticate(self, authorization: str | None) -> Tenant:
        """The tenant for an `Authorization` header value."""
        token = ""
        if authorization:
            scheme, _, rest = authorization.partition(" ")
            token = rest.strip() if scheme.lower() == "bearer" else ""
        if self.required:
            if not token:
                raise AuthenticationFailed(
                    "Missing API key: send it as `Authorization: Bearer <key>`."
                )
            digest = self.hasher.digest(token)
            tenant = self._by_digest.get(digest)
            if tenant is None and self.virtual is not None:
                tenant = self.virtual.tenant(digest, self._policy)
            if tenant is None:
                raise AuthenticationFailed("Incorrect API key provided.")
            if tenant.expires_at is not None and time.time() >= tenant.expires_at:
                raise AuthenticationFailed("The API key has expired.")
            return tenant
        if not token:
            return Tenant(DEFAULT_TEAM, ANONYMOUS)
        tenant = self._anonymous.get(token)
        if tenant is None:
            if len(self._anonymous) > 10_000:  # bound memory under key churn
                self._anonymous.clear()
            partition = "key:" + self.hasher.digest(token)[:24]
            tenant = self._anonymous[token] = Tenant(DEFAULT_TEAM, partition)
        return tenant

    def for_policy(self, policy: Policy) -> KeyRing:
        """A key ring for another policy, with the same secret and API keys."""
        return KeyRing(policy, self.hasher, self.virtual)
