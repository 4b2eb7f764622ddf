"""Policy file schema: backends, the model names apps ask for, and how each is routed."""

from __future__ import annotations

from functools import cached_property
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from gateway.policy.replicas import Location
from gateway.policy.resilience import BackendResilience, PolicyResilience
from gateway.policy.teams import Team
from gateway.wire import Endpoint, Upstream

Tier = Literal["open", "closed"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_DEFAULT_BASE_URL = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com/v1",
}
_DEFAULT_ENDPOINTS: dict[str, list[Endpoint]] = {
    "openai": ["chat", "completions", "embeddings"],
    "anthropic": ["chat"],
}


class Price(Strict):
    """USD per million tokens."""

    input_per_mtok: float = Field(0.0, ge=0)
    output_per_mtok: float = Field(0.0, ge=0)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """The cost of one call in USD."""
        return (
            prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok
        ) / 1e6


class Backend(Strict, BackendResilience, Location):
    """One upstream model on one provider (timeouts, circuit: BackendResilience; URLs: Location)."""

    provider: Literal["openai", "anthropic"]
    # Filled from the key under `backends:`.
    name: str = ""
    # None: send the model name the client asked for (passthrough).
    model: str | None = None
    api_key: SecretStr = SecretStr("")
    # A backend that needs a key and has none is disabled (reported by /readyz), not an error.
    requires_api_key: bool | None = None
    tier: Tier = "open"
    price: Price = Price()
    endpoints: list[Endpoint] | None = None
    headers: dict[str, str] = {}
    # Anthropic needs max_tokens; used when the client gave none.
    default_max_tokens: int = Field(4096, ge=1)
    # Sent as max_tokens when the client set no limit (a small local model may never stop).
    max_tokens: int | None = Field(None, ge=1)
    # Can it call tools (else skipped: a 400 if no target can); what opens one: forced_call.py.
    tools: bool = True
    tool_call_prefill: str | None = Field(None, min_length=1)
    # "native": it serves /v1/responses itself (forwarded as is, not translated to chat).
    responses: Literal["translate", "native"] = "translate"

    @model_validator(mode="after")
    def _defaults(self) -> Backend:
        if not self.base_url:
            object.__setattr__(self, "base_url", _DEFAULT_BASE_URL[self.provider])
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))
        if self.endpoints is None:
            object.__setattr__(self, "endpoints", list(_DEFAULT_ENDPOINTS[self.provider]))
        if self.requires_api_key is None:
            object.__setattr__(self, "requires_api_key", self.tier == "closed")
        return self

    @property
    def enabled(self) -> bool:
        """False when the backend needs an API key that is not set."""
        return not (self.requires_api_key and not self.api_key.get_secret_value())

    def serves(self, endpoint: Endpoint) -> bool:
        """Whether this backend can take requests for an endpoint family."""
        return endpoint in (self.endpoints or ())

    @cached_property
    def upstream(self) -> Upstream:
        """What a provider needs (not price or tier); built once, after backends are named."""
        return Upstream(
            name=self.name,
            base_url=self.base_url,
            model=self.model,
            api_key=self.api_key.get_secret_value(),
            headers=dict(self.headers),
            connect_timeout_s=self.connect_timeout_s,
            timeout_s=self.timeout_s,
            first_token_timeout_s=self.first_token_timeout_s or min(self.timeout_s, 30.0),
            idle_timeout_s=self.idle_timeout_s or min(self.timeout_s, 30.0),
            default_max_tokens=self.default_max_tokens,
            max_tokens=self.max_tokens,
            dialects=frozenset(("responses",) if self.responses == "native" else ()),
            tool_call_prefill=self.tool_call_prefill,
        )


class Condition(Strict):
    """When a route rule applies: a fixed difficulty threshold or a target closed-tier share."""

    difficulty_at_least: float | None = Field(None, ge=0, le=1)
    difficulty_below: float | None = Field(None, ge=0, le=1)
    # Route the hardest `closed_share` of recent traffic by this rule (calibrated threshold).
    closed_share: float | None = Field(None, ge=0, le=1)

    @model_validator(mode="after")
    def _one_kind(self) -> Condition:
        fixed = self.difficulty_at_least is not None or self.difficulty_below is not None
        if fixed and self.closed_share is not None:
            raise ValueError("use either difficulty thresholds or closed_share, not both")
        if not fixed and self.closed_share is None:
            raise ValueError(
                "a condition needs difficulty_at_least, difficulty_below or closed_share"
            )
        return self


class Rule(Strict):
    """Route to the first usable target of `to` when `when` holds (always, if absent).

    `split: {a: 90, b: 10}` instead of `to`: an A/B split by weight, sticky per user or
    conversation; the drawn backend goes first, the others follow by weight as fallbacks.
    `to` is then the split's backends, heaviest first (what every reader of `to` sees).
    """

    when: Condition | None = None
    to: list[str] = []
    split: dict[str, float] | None = None

    @model_validator(mode="after")
    def _targets(self) -> Rule:
        if (not self.to) == (self.split is None):
            raise ValueError("a rule needs exactly one of `to` (targets) or `split` (weights)")
        if self.split is not None:
            if not self.split or any(w <= 0 for w in self.split.values()):
                raise ValueError("split weights must be positive")
            heaviest = sorted(self.split, key=lambda n: -self.split[n])  # type: ignore[index]
            object.__setattr__(self, "to", heaviest)
        return self

    def split_order(self, sticky: float) -> list[str]:
        """The split's backends for a sticky draw in [0, 1): the drawn one first."""
        assert self.split is not None
        total = sum(self.split.values())
        point, seen = sticky * total, 0.0
        drawn = self.to[-1]
        for name, weight in self.split.items():
            seen += weight
            if point < seen:
                drawn = name
                break
        return [drawn, *(n for n in self.to if n != drawn)]


class CachePolicy(Strict):
    """Response cache settings; per model they override the policy-wide ones."""

    enabled: bool | None = None
    ttl_s: int | None = Field(None, ge=1)
    # Cache requests whose temperature is above 0 (they are not deterministic).
    cache_sampled: bool | None = None
    cache_tools: bool | None = None
    # Also answer near-duplicate last user turns in an identical context (see semantic.py).
    semantic: bool | None = None
    semantic_threshold: float | None = Field(None, gt=0, le=1)
    # Share entries across tenants (only for public, non-personal workloads).
    shared_across_tenants: bool | None = None


class Shadow(Strict):
    """Shadow evaluation: a sampled share of answers is also asked of the other tier and judged.

    The routed answer goes to the client first; the shadow call, the judge and the label
    happen afterwards, off the critical path, within a daily spend cap and a concurrency bound.
    """

    sample: float = Field(0.0, ge=0, le=1)
    # The closed-tier backend asked when the open tier answered.
    against: str
    # The open-tier backend asked when the closed tier answered (default: the first open
    # target of the model's default rule).
    open: str | None = None
    # The backend that judges a pair (an LLM judge, asked both ways round).
    judge: str
    max_usd_per_day: float = Field(10.0, ge=0)
    max_in_flight: int = Field(4, ge=1)
    # Requests of anonymous callers (policies without teams) may be shadowed and labelled.
    include_anonymous: bool = False


class Router(Strict):
    """The live routing loop: re-adapt the classifier from the label stream, guarded.

    With `adapt: auto`, one replica at a time re-fits the artifact every `every_s` seconds once
    `min_labels` labels are in the stream; a fit the guard does not accept never goes live.
    """

    adapt: Literal["off", "auto"] = "off"
    min_labels: int = Field(200, ge=50)
    every_s: float = Field(3600.0, ge=1)


class ModelRoute(Strict):
    """A model name applications ask for: a plain alias (`to`) or ordered rules (`route`)."""

    to: list[str] | None = Field(None, min_length=1)
    route: list[Rule] | None = Field(None, min_length=1)
    cache: CachePolicy | None = None
    shadow: Shadow | None = None
    description: str | None = None

    @model_validator(mode="after")
    def _one_form(self) -> ModelRoute:
        if (self.to is None) == (self.route is None):
            raise ValueError("a model needs exactly one of `to` (alias) or `route` (rules)")
        if self.route is not None and self.route[-1].when is not None:
            raise ValueError("the last rule of a route must have no `when` (the default)")
        return self

    @cached_property
    def rules(self) -> list[Rule]:
        """The route as rules; an alias is one unconditional rule.

        Built on first use (the loader's checks read it, so at load) and kept in the
        instance ``__dict__``: later reads on the request path are plain attribute lookups,
        where a pydantic private attribute went through ``__getattr__`` (~40x slower).
        Not a field, so not dumped or compared.
        """
        return self.route if self.route is not None else [Rule(to=self.to or [])]

    @cached_property
    def splits(self) -> bool:
        """Whether any rule is an A/B split (the pipeline then draws a sticky key)."""
        return any(rule.split is not None for rule in self.rules)


class Policy(Strict, PolicyResilience):
    """A whole policy file."""

    version: str | None = None
    backends: dict[str, Backend] = Field(min_length=1)
    models: dict[str, ModelRoute] = Field(min_length=1)
    savings_reference: str | None = None
    cache: CachePolicy = CachePolicy()
    shadow: Shadow | None = None
    router: Router = Router()
    teams: dict[str, Team] = {}

    @model_validator(mode="after")
    def _name_backends(self) -> Policy:
        for name, backend in self.backends.items():
            object.__setattr__(backend, "name", name)
        return self
