"""The state of one request as it moves through the pipeline (data only, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.auth import Tenant
from gateway.limits import Admission
from gateway.policy import Backend
from gateway.wire import Endpoint, Native

if TYPE_CHECKING:
    from gateway.attempt import OpenStream
    from gateway.planning import Plan
    from gateway.state import PolicyState


@dataclass(slots=True)
class Call:
    """What the pipeline knows about one request as it goes."""

    endpoint: Endpoint
    request_id: str
    started: float
    # The policy the request started with: a reload mid-request does not change it.
    state: PolicyState
    body: dict[str, Any] = field(default_factory=dict)
    # The door's own body, for a backend that speaks its dialect (None: chat only).
    native: Native | None = None
    asked: str = ""
    model: str = "-"
    tenant: Tenant | None = None
    stream: bool = False
    score: float | None = None
    # The classifier artifact that scored it (the live one can change between requests).
    scorer: str = ""
    plan: Plan | None = None
    # The backend that answered (or the one a cache hit records, by name and tier).
    backend: str = "-"
    tier: str = "-"
    upstream_s: float = 0.0
    # When the request must be answered by (perf_counter time): walk and relay keep to it.
    deadline: float = float("inf")
    overhead_s: float | None = None
    cache_result: str = "bypass"
    # The limits this request was admitted under; its headers go on every answer.
    admission: Admission | None = None
    # A stream handed to the door and not started yet: if the client leaves before the
    # first read, the pipeline still charges it and closes its upstream.
    unread: OpenStream | None = None
    # What the client got; an exception that escapes the pipeline leaves it at 500.
    status: int = 500
    # For the decision record: backends that failed before the answer, tokens, cost.
    fallbacks: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    reference_cost_usd: float = 0.0
    # Tracing (opt-in): the request's span, and the `traceparent` passed to backends.
    span: Any = None
    traceparent: str | None = None
    # The front door's metrics label when it is not the endpoint's ("messages", "responses").
    door: str | None = None

    @property
    def team(self) -> str:
        """The metrics label of the caller's team."""
        return self.tenant.team if self.tenant is not None else "unknown"

    @property
    def key_name(self) -> str:
        """The caller's key as records and logs name it (never the key); "" when none."""
        return self.tenant.key_name if self.tenant is not None else ""

    @property
    def label(self) -> str:
        """The `endpoint` label of request metrics: the door that was called."""
        return self.door or self.endpoint

    def answered_by(self, backend: Backend) -> None:
        """Record the backend that is answering."""
        self.backend, self.tier = backend.name, backend.tier

    def reason(self) -> str:
        """Why the answering backend answered (the `reason` of gateway_routing_decisions_total)."""
        if self.cache_result == "hit":
            return "cache"
        plan = self.plan
        if plan is None:
            return "-"
        return "fallback" if plan.targets[0].name != self.backend else plan.reason

    def headers(self) -> dict[str, str]:
        """The gateway's response headers, as far as they are known (errors carry them too)."""
        headers = {"x-request-id": self.request_id}
        answered = self.backend != "-"
        if answered:
            headers["x-gateway-backend"] = self.backend
            headers["x-gateway-tier"] = self.tier
            headers["x-gateway-reason"] = self.reason()
        if self.score is not None:
            headers["x-gateway-difficulty"] = f"{self.score:.4f}"
            headers["x-gateway-classifier"] = self.scorer
        elif answered:
            headers["x-gateway-difficulty"] = "n/a"
        if answered or self.cache_result != "bypass":
            headers["x-gateway-cache"] = self.cache_result
        if self.admission is not None:
            headers.update(self.admission.headers)
        return headers
