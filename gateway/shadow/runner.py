"""Shadow evaluation: after a sampled answer, ask the other tier too, judge, keep a label.

Everything here runs after the client has its answer, as background work: `consider`
only decides (a few attribute reads and one random draw) and spawns `_evaluate`. Bounded by
the policy's `max_in_flight` (dropped with a counted reason when full) and `max_usd_per_day`
(shared through Redis when configured).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from gateway.policy import Backend, Policy, Shadow
from gateway.shadow.judge import (
    Reply,
    Verdict,
    both_ways,
    cheap_verdict,
    judge_messages,
    parse_judgement,
    reply_of,
)
from gateway.shadow.labels import LabelStore, Retained

if TYPE_CHECKING:
    from gateway.call import Call
    from gateway.metrics import Metrics
    from gateway.providers import Provider
    from gateway.settings import Settings
    from gateway.tasks import Background

log = logging.getLogger("gateway.shadow")
SPEND_KEY = "gateway:shadow:spend"
# Label writes and feedback lookups wait this long for Redis (never on the request path).
BACKGROUND_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class Pair:
    """A routed answer waiting for its shadow: what the evaluation needs from the request."""

    request_id: str
    team: str
    model: str
    asked: str
    score: float | None
    body: dict[str, Any]
    routed: Backend
    answer: bytes


def shadow_of(policy: Policy, model: str) -> Shadow | None:
    """The shadow settings that apply to a model name (its own, else the policy's)."""
    route = policy.models.get(model)
    own = route.shadow if route is not None else None
    return own if own is not None else policy.shadow


class Shadower:
    """Samples answers for shadow evaluation and runs it off the critical path."""

    def __init__(
        self,
        settings: Settings,
        redis: Any,
        metrics: Metrics,
        background: Background,
        providers: dict[str, Provider],
        classifier_version: Callable[[], str],
    ) -> None:
        self._redis = redis
        self._metrics = metrics
        self._background = background
        self._providers = providers
        self._classifier_version = classifier_version
        timeout_s = BACKGROUND_TIMEOUT_S
        self.labels = LabelStore(redis, timeout_s, settings.labels_max)
        self.retained = Retained(redis, timeout_s, settings.retain_s, background.spawn)
        self.in_flight = 0
        self._spent: dict[str, float] = {}  # UTC day → USD (Redis's total when shared)

    def wants(self, call: Call, opted_out: bool) -> Shadow | None:
        """The shadow settings if this request is sampled (decided once, before the answer)."""
        policy = call.state.loaded.policy
        shadow = shadow_of(policy, call.model)
        if shadow is None or shadow.sample <= 0 or call.endpoint != "chat" or opted_out:
            return None
        body = call.body
        # Labels keep prompts: only teams that opted in (and may leave self-hosting), or
        # anonymous callers where the policy says so and has no teams.
        allowed = call.state.retains(call.team) if policy.teams else shadow.include_anonymous
        if (body.get("n") or 1) > 1 or not allowed:
            return None
        spec = policy.teams.get(call.team)
        if spec is not None and spec.side_effect_tools and _offers(body, spec.side_effect_tools):
            return None
        return shadow if random.random() < shadow.sample else None

    def consider(self, call: Call, shadow: Shadow, answer: bytes) -> None:
        """Start the evaluation of a sampled answer, unless the bounds say no."""
        m = self._metrics
        if self.in_flight >= shadow.max_in_flight:
            m.shadow.labels(call.model, "dropped_busy").inc()
            return
        if self._spent.get(_day(), 0.0) >= shadow.max_usd_per_day:
            m.shadow.labels(call.model, "dropped_budget").inc()
            return
        policy = call.state.loaded.policy
        routed = policy.backends.get(call.backend)
        if routed is None:
            return
        pair = Pair(
            call.request_id,
            call.team,
            call.model,
            call.asked,
            call.score,
            call.body,
            routed,
            answer,
        )
        self.in_flight += 1
        self._background.spawn(self._evaluate(policy, shadow, pair))

    async def _evaluate(self, policy: Policy, shadow: Shadow, pair: Pair) -> None:
        m = self._metrics
        try:
            verdict, other = await self._verdict(policy, shadow, pair)
            open_b, closed_b = (
                (pair.routed, other) if pair.routed.tier == "open" else (other, pair.routed)
            )
            record = {
                "id": pair.request_id,
                "messages": pair.body.get("messages"),
                "label": verdict.label,
                "source": verdict.source,
                "team": pair.team,
                "model": pair.model,
                "score": pair.score,
                "routed": pair.routed.name,
                "open_backend": open_b.name,
                "closed_backend": closed_b.name,
                "judge": shadow.judge if verdict.source == "judge" else None,
                "classifier_version": self._classifier_version(),
                "ts": time.time(),
            }
            await self.labels.add(record)
        except Exception as exc:  # a shadow never affects serving; it is counted
            m.shadow.labels(pair.model, "failed").inc()
            log.warning("shadow evaluation failed", extra={"error": type(exc).__name__})
            return
        finally:
            self.in_flight -= 1
        m.shadow.labels(pair.model, "labelled").inc()
        m.labels_made.labels(pair.model, verdict.source).inc()
        if pair.score is not None:
            decile = str(min(int(pair.score * 10), 9))
            outcome = "open_worse" if verdict.label >= 0.5 else "open_ok"
            m.labels_by_decile.labels(decile, pair.routed.tier, outcome).inc()

    async def _verdict(self, policy: Policy, shadow: Shadow, pair: Pair) -> tuple[Verdict, Backend]:
        other = _counterpart(policy, shadow, pair)
        body = {k: v for k, v in pair.body.items() if k not in ("stream", "stream_options")}
        body["model"] = other.model or pair.asked
        completion = await self._ask(other, body, "shadow")
        routed, shadowed = reply_of(orjson.loads(pair.answer)), reply_of(completion)
        open_r, closed_r = (routed, shadowed) if pair.routed.tier == "open" else (shadowed, routed)
        verdict = cheap_verdict(pair.body, open_r, closed_r)
        if verdict is None:
            judge = policy.backends[shadow.judge]
            first = await self._judge(judge, pair.body, open_r, closed_r)
            second = await self._judge(judge, pair.body, closed_r, open_r)
            verdict = both_ways(first, second)
        return verdict, other

    async def _judge(
        self, judge: Backend, request: dict[str, Any], first: Reply, second: Reply
    ) -> tuple[str, str]:
        body = {
            "model": judge.model or "judge",
            "messages": judge_messages(request, first, second),
            "temperature": 0,
            "max_tokens": 64,
            "response_format": {"type": "json_object"},
        }
        answer = await self._ask(judge, body, "judge")
        judgement = parse_judgement(reply_of(answer).text)
        if judgement is None:
            raise ValueError("the judge's answer is not a verdict")
        return judgement

    async def _ask(self, backend: Backend, body: dict[str, Any], purpose: str) -> dict[str, Any]:
        provider = self._providers[backend.provider]
        completion = await provider.complete(backend.upstream, "chat", body)
        cost = backend.price.cost(
            completion.usage.prompt_tokens, completion.usage.completion_tokens
        )
        self._metrics.shadow_cost.labels(backend.name, purpose).inc(cost)
        await self._add_spend(cost)
        parsed: dict[str, Any] = orjson.loads(completion.body)
        return parsed

    async def _add_spend(self, usd: float) -> None:
        day = _day()
        redis = self._redis
        if redis is None:
            self._spent[day] = self._spent.get(day, 0.0) + usd
            return
        key = f"{SPEND_KEY}:{day}"
        try:
            total = await redis.incrbyfloat(key, usd)
            await redis.expire(key, 2 * 86400)
            self._spent = {day: float(total)}
        except Exception:
            self._spent[day] = self._spent.get(day, 0.0) + usd


def _counterpart(policy: Policy, shadow: Shadow, pair: Pair) -> Backend:
    """The other tier's backend for this pair."""
    if pair.routed.tier == "open":
        return policy.backends[shadow.against]
    if shadow.open is not None:
        return policy.backends[shadow.open]
    route = policy.models.get(pair.model)
    for name in route.rules[-1].to if route is not None else ():
        if policy.backends[name].tier == "open":
            return policy.backends[name]
    raise LookupError(f"no open-tier backend to compare with for {pair.model!r}")


def _offers(body: dict[str, Any], names: list[str]) -> bool:
    for tool in body.get("tools") or ():
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and function.get("name") in names:
            return True
    return False


def _day() -> str:
    return time.strftime("%Y%m%d", time.gmtime())
