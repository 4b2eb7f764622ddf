"""Why one request would go where it goes: score, signals, rule, and the ordered targets.

Everything is the server's own code: `DifficultyClassifier.score` / `explain`,
`planner.resolve_model`, `choose_rule` and `make_plan`. A `closed_share` rule's threshold
is the one a freshly started replica uses (the training-score prior); the live one
follows traffic. Backend health is unknown offline unless a gateway's `/readyz` is read
(its open circuits then go last, as the planner orders them).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from gateway.breakers import Breakers
from gateway.difficulty import DifficultyClassifier, ShareCalibrator
from gateway.errors import UpstreamUnavailable
from gateway.planning import choose_rule, make_plan, resolve_model, sticky_draw
from gateway.policy import ModelRoute, Policy, Rule
from gateway.wire import Endpoint


@dataclass(frozen=True)
class RuleCheck:
    """One rule of the route and whether it holds for the score."""

    index: int
    condition: str
    to: list[str]
    verdict: str  # "chosen", "does not hold", "not tried"
    why: str


@dataclass(frozen=True)
class TargetState:
    """One backend the request may be sent to, in the order it would be tried."""

    backend: str
    tier: str
    position: int | None  # 1 = first try; None = left out
    state: str


@dataclass(frozen=True)
class Explanation:
    """The whole answer of `gateway policy explain`."""

    model: str
    entry: str
    endpoint: str
    score: float | None
    signals: list[tuple[str, float]]
    rule: int
    reason: str
    rules: list[RuleCheck]
    targets: list[TargetState]
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        out = asdict(self)
        out["signals"] = [{"signal": s, "logit": w} for s, w in self.signals]
        return out


def _condition(rule: Rule) -> str:
    when = rule.when
    if when is None:
        return "always (default)"
    if when.closed_share is not None:
        return f"closed_share: {when.closed_share:g}"
    parts = []
    if when.difficulty_at_least is not None:
        parts.append(f"difficulty_at_least: {when.difficulty_at_least:g}")
    if when.difficulty_below is not None:
        parts.append(f"difficulty_below: {when.difficulty_below:g}")
    return ", ".join(parts)


def _why(rule: Rule, score: float, threshold: float | None) -> tuple[bool, str]:
    when = rule.when
    if when is None:
        return True, "no condition"
    if when.closed_share is not None:
        assert threshold is not None
        holds = score >= threshold
        op = ">=" if holds else "<"
        return holds, f"score {score:.4f} {op} calibrated threshold {threshold:.4f}"
    reasons, holds = [], True
    if when.difficulty_at_least is not None:
        ok = score >= when.difficulty_at_least
        holds &= ok
        reasons.append(f"score {score:.4f} {'>=' if ok else '<'} {when.difficulty_at_least:g}")
    if when.difficulty_below is not None:
        ok = score < when.difficulty_below
        holds &= ok
        reasons.append(f"score {score:.4f} {'<' if ok else '>='} {when.difficulty_below:g}")
    return holds, " and ".join(reasons)


def _rules(
    route: ModelRoute, score: float | None, chosen: int, thresholds: Mapping[int, float]
) -> list[RuleCheck]:
    if route.route is None:
        return [RuleCheck(0, "alias", list(route.rules[0].to), "chosen", "a plain alias")]
    out = []
    for i, rule in enumerate(route.rules):
        if score is None:
            why = "unclassified endpoint: the default rule"
        else:
            _, why = _why(rule, score, thresholds.get(i))
        verdict = "chosen" if i == chosen else "not tried" if i > chosen else "does not hold"
        out.append(RuleCheck(i, _condition(rule), list(rule.to), verdict, why))
    return out


def _state(policy: Policy, name: str, endpoint: Endpoint, live: Mapping[str, str]) -> str:
    backend = policy.backends[name]
    if not backend.enabled:
        return "disabled: API key not set"
    if not backend.serves(endpoint):
        return f"left out: does not serve {endpoint}"
    state = live.get(name, "ok")
    if state == "circuit open":
        return "circuit open: tried last"
    return "ready" if state == "ok" else state


def explain_request(
    policy: Policy,
    body: Mapping[str, Any],
    *,
    classifier: DifficultyClassifier,
    model: str,
    endpoint: Endpoint = "chat",
    allowed: frozenset[str] | None = None,
    live: Mapping[str, str] | None = None,
    top: int = 8,
    closed_allowed: bool = True,
) -> Explanation:
    """Explain where `body` would be routed; raises the gateway's error if it would fail."""
    live = live or {}
    entry, route = resolve_model(policy, model, allowed)
    classified = endpoint != "embeddings"
    score = classifier.score(body) if classified else None
    signals = classifier.explain(body, top=top) if classified else []
    thresholds: dict[int, float] = {}
    for i, rule in enumerate(route.rules):
        if rule.when is not None and rule.when.closed_share is not None:
            calibrator = ShareCalibrator(rule.when.closed_share, prior=classifier.score_prior)
            thresholds[i] = calibrator.threshold()
    chosen, reason = choose_rule(route, score, lambda i: thresholds.get(i, 1.0))
    health = Breakers()
    for name, state in live.items():
        if state == "circuit open":
            health[name].trip(time.monotonic(), policy.backends[name].breaker)
    names = list(route.rules[chosen].to)
    names += [n for n in route.rules[-1].to if n not in names]
    try:
        plan = make_plan(
            policy,
            entry,
            route,
            endpoint,
            score,
            lambda i: thresholds.get(i, 1.0),
            health,
            closed_allowed=closed_allowed,
            sticky=sticky_draw(dict(body)) if route.splits else 0.0,
        )
        order = [b.name for b in plan.targets]
    except UpstreamUnavailable:
        order = []
    targets = [
        TargetState(
            b, policy.backends[b].tier, order.index(b) + 1, _state(policy, b, endpoint, live)
        )
        for b in order
    ]
    targets += [
        TargetState(n, policy.backends[n].tier, None, _state(policy, n, endpoint, live))
        for n in names
        if n not in order
    ]
    notes = []
    if thresholds:
        notes.append(
            "closed_share thresholds are a fresh replica's (training-score prior); "
            "the live ones follow recent traffic"
        )
    if not order:
        notes.append("no backend can serve this request: the gateway would answer 503")
    if not live:
        notes.append("backend health not known offline (give --gateway URL to read /readyz)")
    return Explanation(
        model,
        entry,
        endpoint,
        score,
        signals,
        chosen,
        reason,
        _rules(route, score, chosen, thresholds),
        targets,
        notes,
    )
