"""Virtual keys → tenants. Without teams in the policy, every bearer token is its own tenant."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from gateway.errors import AuthenticationFailed
from gateway.policy import Limits, Policy

ANONYMOUS = "anonymous"
DEFAULT_TEAM = "default"


@dataclass(frozen=True, slots=True)
class Tenant:
    """Who is calling: the team (a metrics label), the cache partition and the limits.

    `key_id` names the caller's key without revealing it (a digest prefix); `key_limits`
    apply to that key alone, `limits` to the whole team.
    """

    team: str
    partition: str
    allowed_models: frozenset[str] | None = None
    limits: Limits | None = None
    key_id: str = ""
    key_limits: Limits | None = None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class KeyRing:
    """Looks up callers by the hash of their key, never by the key itself."""

    def __init__(self, policy: Policy) -> None:
        self.required = bool(policy.teams)
        self._by_digest: dict[str, Tenant] = {}
        for team, spec in policy.teams.items():
            allowed = frozenset(spec.allowed_models) if spec.allowed_models is not None else None
            for key in spec.keys:
                digest = _digest(key)
                tenant = Tenant(
                    team, "team:" + team, allowed, spec.limits, digest[:16], spec.key_limits
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
            tenant = self._by_digest.get(_digest(token))
            if tenant is None:
                raise AuthenticationFailed("Incorrect API key provided.")
            return tenant
        if not token:
            return Tenant(DEFAULT_TEAM, ANONYMOUS)
        tenant = self._anonymous.get(token)
        if tenant is None:
            if len(self._anonymous) > 10_000:  # bound memory under key churn
                self._anonymous.clear()
            tenant = self._anonymous[token] = Tenant(DEFAULT_TEAM, "key:" + _digest(token)[:24])
        return tenant
