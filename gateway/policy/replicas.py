"""Where a backend lives: one `base_url`, or several replicas of it (`base_urls`).

A replica is the same model at another address (same price, tier, timeouts, breaker
policy). Each replica becomes a `Backend` of its own (`Backend.replicas`) that differs only
in its URL and its `key`: the name its circuit breaker is kept under (``name#index``). The
backend's `name` stays the one the policy gives, so metrics, headers and decision records
name the backend, never a replica.
"""

from __future__ import annotations

from dataclasses import replace
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    from gateway.policy.schema import Backend


class Location(BaseModel):
    """The `base_url` / `base_urls` keys `Backend` takes from here (see docs/policy.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str = ""
    # Replicas of one backend, balanced per request; exclusive with `base_url`.
    base_urls: list[str] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _one_location(self) -> Location:
        if self.base_urls is None:
            return self
        if "base_url" in self.model_fields_set:
            raise ValueError("give either base_url or base_urls, not both")
        urls = [url.rstrip("/") for url in self.base_urls]
        object.__setattr__(self, "base_urls", urls)
        # What readers of one URL see (health of the backend as a whole, /v1/models).
        object.__setattr__(self, "base_url", urls[0])
        return self

    @cached_property
    def key(self) -> str:
        """The name this backend's circuit breaker is kept under (a replica: ``name#i``)."""
        return str(getattr(self, "name", ""))

    @cached_property
    def replica(self) -> int | None:
        """This replica's index in its backend's `base_urls`; None for a backend."""
        return None

    @cached_property
    def replicas(self) -> tuple[Backend, ...] | None:
        """One `Backend` per URL of `base_urls` (None with a single `base_url`).

        Built on first use, after the policy has named its backends; kept like `upstream`.
        """
        if self.base_urls is None:
            return None
        backend: Backend = self  # type: ignore[assignment]
        return tuple(_replica(backend, i, url) for i, url in enumerate(self.base_urls))


def replica_key(name: str, index: int) -> str:
    """The breaker name of a backend's replica."""
    return f"{name}#{index}"


def _replica(backend: Backend, index: int, url: str) -> Backend:
    copy = backend.model_copy(update={"base_url": url})
    cached: dict[str, Any] = copy.__dict__
    # model_copy copies what was cached on the original: replace all of it.
    cached["upstream"] = replace(backend.upstream, base_url=url)
    cached["key"] = replica_key(backend.name, index)
    cached["replica"] = index
    cached["replicas"] = None
    return copy
