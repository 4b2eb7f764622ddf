"""Planning: model name + difficulty + backend health → ordered targets. Pure, no I/O."""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway import replicas
from gateway.breakers import Breakers
from gateway.errors import InvalidRequest, ModelNotFound, PermissionDenied, UpstreamUnavailable
from gateway.policy import Backend, ModelRoute, Policy, Rule
from gateway.wire import Endpoint

WILDCARD = "*"


@dataclass(slots=True)
class Plan:
    """Where a request goes: targets in order (first usable wins, the rest are fallbacks)."""

    targets: list[Backend]
    reason: str
    # The saturated backend the rule preferred, when a ready one takes its traffic instead,
    # and why it was saturated (`max_concurrency`, or `load`: its own /metrics).
    spilled_from: str | None = None
    spill_reason: str = ""


def resolve_model(
    policy: Policy, name: str, allowed: frozenset[str] | None
) -> tuple[str, ModelRoute]:
    """The policy entry for a requested model name (or the `*` catch-all)."""
    key = name if name in policy.models else WILDCARD
    route = policy.models.get(key)
    if route is None:
        raise ModelNotFound(
            f"The model `{name}` does not exist or you do not have access to it.", param="model"
        )
    if allowed is not None and key not in allowed:
        raise PermissionDenied(f"Your key may not use the model `{name}`.", param="model")
    return key, route


# Whether a `closed_share` rule (by index) takes a score: the calibrator's tie-aware draw.
Decide = Callable[[int, float], bool]


def _matches(
    rule: Rule, i: int, score: float, threshold: Callable[[int], float], decide: Decide | None
) -> bool:
    when = rule.when
    if when is None:
        return True
    if when.closed_share is not None:
        return decide(i, score) if decide is not None else score >= threshold(i)
    if when.difficulty_at_least is not None and score < when.difficulty_at_least:
        return False
    return not (when.difficulty_below is not None and score >= when.difficulty_below)


def choose_rule(
    route: ModelRoute,
    score: float | None,
    threshold: Callable[[int], float],
    decide: Decide | None = None,
) -> tuple[int, str]:
    """The first rule that holds for this score, and why it was chosen.

    A `closed_share` rule holds where ``decide`` says (the server: tie-aware, so equal
    scores split by the target share), or else at ``threshold`` and above (offline tools).
    """
    rules = route.rules
    if route.route is None:
        return 0, "alias"
    if score is None:  # unclassified endpoints take the default rule
        return len(rules) - 1, "default"
    for i, rule in enumerate(rules):
        if _matches(rule, i, score, threshold, decide):
            when = rule.when
            if when is None:
                return i, "default"
            return i, "calibration" if when.closed_share is not None else "rule"
    return len(rules) - 1, "default"


def make_plan(
    policy: Policy,
    model: str,
    route: ModelRoute,
    endpoint: Endpoint,
    score: float | None,
    threshold: Callable[[int], float],
    breakers: Breakers,
    *,
    closed_allowed: bool = True,
    open_first: bool = False,
    decide: Decide | None = None,
    sticky: float = 0.0,
    needs_tools: bool = False,
) -> Plan:
    """Order the chosen rule's targets, then the default rule's, as fallbacks.

    Disabled backends (no API key), backends that cannot serve the endpoint and, without
    ``closed_allowed``, closed-tier ones are left out; open circuits, backends paused by
    their `Retry-After` and saturated backends (at `max_concurrency`, or past their `load:`
    limits) go last rather than nowhere. When the rule's first choice is saturated and another
    target is ready, the plan is a spill-over. When no ready target is left and every usable
    one is past `load:` limits whose `when_saturated` is `reject`, the request is a 503. A
    backend with replicas is planned as its replicas, balanced (`gateway.replicas`).

    ``open_first`` (the team is past its soft budget share): closed-tier targets are left out
    too while an open-tier target would admit the request (saturated counts: it queues);
    otherwise the plan stays as it is. When that moved the request off a closed first
    choice, the reason is ``budget``.
    """
    rules = route.rules
    index, reason = choose_rule(route, score, threshold, decide)
    chosen = rules[index]
    if chosen.split is not None:  # an A/B split: `sticky` (a user's or conversation's draw)
        names, reason = chosen.split_order(sticky), "split"
    else:
        names = list(chosen.to)
    for name in rules[-1].to:
        if name not in names:
            names.append(name)
    now = time.monotonic()
    ready: list[Backend] = []
    degraded: list[Backend] = []
    spilled: str | None = None
    spill_reason = ""
    rejecting: set[str] = set()  # past `load:` limits that answer 503 rather than queue
    without_tools: list[str] = []
    first: Backend | None = None  # the rule's first choice among the eligible targets
    refusing: set[str] = set()  # circuit open (or probes taken), or paused by Retry-After
    for name in names:
        backend = policy.backends[name]
        if not backend.enabled or not backend.serves(endpoint):
            continue
        if not closed_allowed and backend.tier == "closed":
            continue  # a team whose data must stay on self-hosted models
        if needs_tools and not backend.tools:
            without_tools.append(name)
            continue
        first = first or backend
        if backend.replicas is not None:  # each replica planned as a backend of its own
            placed = replicas.place(backend.replicas, breakers, now)
            refusing.update(placed.refusing)
            if placed.saturated and not ready and not degraded:
                spilled, spill_reason = name, "max_concurrency"
            ready += placed.ready
            degraded += placed.degraded
            continue
        state = breakers[name]
        busy = backend.max_concurrency is not None and state.in_flight >= backend.max_concurrency
        loaded = backend.load is not None and state.is_overloaded(now)
        saturated = busy or loaded
        usable = state.usable(now, backend.breaker) and not state.paused(now)
        if not usable:
            refusing.add(name)
        elif loaded and backend.load is not None and backend.load.when_saturated == "reject":
            rejecting.add(name)
        if saturated and usable and not ready and not degraded:
            spilled, spill_reason = name, "max_concurrency" if busy else "load"
        (ready if usable and not saturated else degraded).append(backend)
    targets = ready + degraded
    if open_first and any(b.tier != "closed" and b.key not in refusing for b in targets):
        if first is not None and first.tier == "closed":
            reason, spilled = "budget", None
        ready = [b for b in ready if b.tier != "closed"]
        targets = ready + [b for b in degraded if b.tier != "closed"]
    if not targets and without_tools:
        raise InvalidRequest(
            f"The request offers tools, and no backend for `{model}` can call tools "
            f"({', '.join(without_tools)}). Send it without `tools`, or with "
            '`"tool_choice": "none"`.',
            param="tools",
        )
    if not targets:
        raise UpstreamUnavailable(f"No backend is configured to serve `{model}` for {endpoint}.")
    if not ready and rejecting and all(b.key in refusing | rejecting for b in targets):
        wait = min(b.load.interval_s for b in targets if b.load is not None and b.name in rejecting)
        raise UpstreamUnavailable(
            f"Every backend for `{model}` is saturated ({', '.join(sorted(rejecting))}); "
            "try again shortly.",
            headers={"retry-after": str(max(math.ceil(wait), 1))},
        )
    if spilled is not None and ready:
        return Plan(targets, "spillover", spilled, spill_reason)
    return Plan(targets, reason)


def sticky_draw(body: dict[str, Any]) -> float:
    """A draw in [0, 1) that stays the same for a user, or else for a conversation.

    The user is the body's `user` (or `safety_identifier`, `prompt_cache_key`,
    `metadata.user_id`); without one, the conversation's first user message.
    """
    metadata = body.get("metadata")
    for key in (
        body.get("user"),
        body.get("safety_identifier"),
        body.get("prompt_cache_key"),
        metadata.get("user_id") if isinstance(metadata, dict) else None,
    ):
        if isinstance(key, str) and key:
            return zlib.crc32(b"u:" + key.encode()) / 2**32
    for message in body.get("messages") or ():
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            text = content if isinstance(content, str) else repr(content)
            return zlib.crc32(b"c:" + text.encode()) / 2**32
    prompt = body.get("prompt")
    return zlib.crc32(b"p:" + repr(prompt).encode()) / 2**32
