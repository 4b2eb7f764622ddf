"""What is kept of a key made through the API (its keyed hash, never the key), the bodies that
create and change one, and their checks against the policy."""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.auth import Tenant
from gateway.errors import InvalidRequest
from gateway.policy import Limits, Policy

KEY_PREFIX = "sk-gw-"
Body = TypeVar("Body", bound=BaseModel)


class KeyRecord(BaseModel):
    """One key as stored: `digest` is HMAC-SHA256(server secret, key)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str
    team: str
    digest: str
    name: str | None = None
    allowed_models: tuple[str, ...] | None = None
    limits: Limits | None = None
    created: float
    expires_at: float | None = None
    revoked_at: float | None = None
    rotated_at: float | None = None
    # Set when the record became a tombstone (see `purged`): its digest is gone.
    purged_at: float | None = None

    def status(self, now: float) -> str:
        """`active`, `expired` or `revoked`."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active"

    def public(self, now: float, key: str | None = None) -> dict[str, Any]:
        """The key as the API shows it: never the digest; the clear key only when just made."""
        shown: dict[str, Any] = {"object": "api_key", "id": self.id}
        if key is not None:
            shown["key"] = key
        limits = self.limits.model_dump(exclude_defaults=True) if self.limits else None
        shown.update(
            team=self.team,
            name=self.name,
            allowed_models=list(self.allowed_models) if self.allowed_models is not None else None,
            limits=limits,
            created=int(self.created),
            expires_at=_epoch(self.expires_at),
            revoked_at=_epoch(self.revoked_at),
            rotated_at=_epoch(self.rotated_at),
            purged_at=_epoch(self.purged_at),
            status=self.status(now),
        )
        return shown

    def ended(self) -> float | None:
        """When the key stopped working for good (revoked or expired), if it did."""
        if self.revoked_at is not None:
            return self.revoked_at
        return self.expires_at

    def purged(self, now: float, retention_s: float, tombstone_s: float) -> KeyRecord | None:
        """What to keep of this record at `now`: itself, a tombstone, or None (delete it).

        A key revoked or expired for `retention_s` becomes a tombstone: its id, team, name
        and dates stay (the audit trail), its digest, models and limits go; `tombstone_s`
        later the tombstone goes too.
        """
        ended = self.ended()
        if ended is None or now < ended + retention_s:
            return self
        if self.purged_at is None:
            update = {"digest": "", "allowed_models": None, "limits": None, "purged_at": now}
            return self.model_copy(update=update)
        return self if now < self.purged_at + tombstone_s else None

    def tenant(self, policy: Policy) -> Tenant | None:
        """The tenant this key stands for under `policy`; None once its team is gone."""
        team = policy.teams.get(self.team)
        if team is None:
            return None
        allowed = None if team.allowed_models is None else frozenset(team.allowed_models)
        if self.allowed_models is not None:
            # Within the team's list as it is now: it may have shrunk since the key was made.
            own = frozenset(self.allowed_models)
            allowed = own if allowed is None else own & allowed
        limits = self.limits if self.limits is not None else team.key_limits
        partition = "team:" + self.team
        return Tenant(
            self.team,
            partition,
            allowed,
            team.limits,
            self.id,
            limits,
            self.expires_at,
            key_name=self.id,
        )


class KeyChange(BaseModel):
    """The body of `POST /admin/keys/{id}` (all optional): what a key may do, and until when."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, max_length=200)
    allowed_models: list[str] | None = None
    limits: Limits | None = None
    # Shorthands for limits.budget_usd_per_day / _per_month, as in the policy.
    budget_usd_per_day: float | None = Field(None, gt=0)
    budget_usd_per_month: float | None = Field(None, gt=0)
    # Epoch seconds or ISO 8601 (UTC when no offset is given).
    expires_at: datetime | None = None

    def merged_limits(self) -> Limits | None:
        """`limits` with the budget shorthands folded in."""
        given = self.limits.model_dump(exclude_unset=True) if self.limits else {}
        for name in ("budget_usd_per_day", "budget_usd_per_month"):
            value = getattr(self, name)
            if value is None:
                continue
            if given.get(name, value) != value:
                raise InvalidRequest(f"'{name}' differs from 'limits.{name}'.", param=name)
            given[name] = value
        for name in ("fail", "soft_budget_share"):
            if name in given:
                raise InvalidRequest(
                    f"'limits.{name}' applies to a team, not to one key: set it in the policy.",
                    param=f"limits.{name}",
                )
        return Limits.model_validate(given) if given or self.limits else None

    def expiry(self, now: float) -> float | None:
        """`expires_at` as epoch seconds; it must lie in the future."""
        if self.expires_at is None:
            return None
        when = self.expires_at
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        at = when.timestamp()
        if at <= now:
            raise InvalidRequest("'expires_at' must be in the future.", param="expires_at")
        return at


class NewKey(KeyChange):
    """The body of `POST /admin/keys`."""

    team: str = Field(min_length=1)


def parse(model: type[Body], body: bytes) -> Body:
    """A request body as `model`; any problem is a 400 naming the field (never its value)."""
    try:
        return model.model_validate_json(body or b"{}")
    except ValidationError as exc:
        err = exc.errors(include_input=False, include_url=False)[0]
        where = ".".join(str(p) for p in err["loc"])
        if err["type"] == "json_invalid":
            raise InvalidRequest("The body must be a JSON object.") from None
        message = f"'{where}': {err['msg']}." if where else f"{err['msg']}."
        raise InvalidRequest(message, param=where or None) from None


def check_models(models: list[str] | None, team: str, policy: Policy) -> tuple[str, ...] | None:
    """A key's allowed models: names of the policy, within what its team may use."""
    if models is None:
        return None
    allowed = policy.teams[team].allowed_models
    for name in models:
        if name not in policy.models:
            raise InvalidRequest(f"Unknown model {name!r}.", param="allowed_models")
        if allowed is not None and name not in allowed:
            raise InvalidRequest(
                f"Team {team!r} may not use model {name!r}.", param="allowed_models"
            )
    return tuple(dict.fromkeys(models))


def check_team(team: str, policy: Policy) -> None:
    """Keys belong to a team of the policy."""
    if team not in policy.teams:
        raise InvalidRequest(
            f"Unknown team {team!r}: keys belong to a team of the policy.", param="team"
        )


def new_record(spec: NewKey, policy: Policy, digest: str) -> KeyRecord:
    """The record of a new key for `spec`, checked against `policy`."""
    check_team(spec.team, policy)
    now = time.time()
    return KeyRecord(
        id="key_" + secrets.token_hex(8),
        team=spec.team,
        digest=digest,
        name=spec.name,
        allowed_models=check_models(spec.allowed_models, spec.team, policy),
        limits=spec.merged_limits(),
        created=now,
        expires_at=spec.expiry(now),
    )


def changed(record: KeyRecord, change: KeyChange, policy: Policy) -> KeyRecord:
    """`record` with the fields `change` sets (null clears one)."""
    given = change.model_fields_set
    update: dict[str, Any] = {}
    if "name" in given:
        update["name"] = change.name
    if "allowed_models" in given:
        check_team(record.team, policy)
        update["allowed_models"] = check_models(change.allowed_models, record.team, policy)
    if given & {"limits", "budget_usd_per_day", "budget_usd_per_month"}:
        update["limits"] = change.merged_limits()
    if "expires_at" in given:
        update["expires_at"] = change.expiry(time.time())
    return record.model_copy(update=update)


def mint() -> str:
    """A new clear key: `sk-gw-` and 256 random bits."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def _epoch(value: float | None) -> int | None:
    return int(value) if value is not None else None
