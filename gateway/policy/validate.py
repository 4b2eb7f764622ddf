"""Semantic checks of a schema-valid policy: what pydantic cannot see on one field.

The loader runs these on every load, so `gateway policy validate`, startup and hot reload
refuse the same files. Each check adds problems to a `Problems`; none raises.

- routes: unknown backends; rules that can never match (after a catch-all, an empty
  difficulty range, or a range the rules before it already take)
- prices: the savings reference and every backend a budgeted team can reach need one
- `savings_reference`: must exist and be closed-tier
- model names: two that differ only in case or spacing, or a `*` pattern (only `*`
  alone is a wildcard)
- teams: a key owned twice, an unknown allowed model
- backends: `base_url` (each of `base_urls`, no two alike) must be an http(s) URL
- shadow: `against` a closed-tier backend, `open` an open-tier one, `judge` any known one
"""

from __future__ import annotations

import math
from urllib.parse import urlsplit

from gateway.policy.problems import PathKey, Problems
from gateway.policy.replicas import replica_key
from gateway.policy.schema import Condition, ModelRoute, Policy, Shadow

WILDCARD = "*"


def check_policy(policy: Policy, problems: Problems) -> None:
    """Run every semantic check on `policy`, adding what is wrong to `problems`."""
    _check_backends(policy, problems)
    for name, route in policy.models.items():
        _check_targets(policy, name, route, problems)
        _check_rules(name, route, problems)
    _check_model_names(policy, problems)
    _check_savings_reference(policy, problems)
    _check_teams(policy, problems)
    _check_prices(policy, problems)
    _check_shadows(policy, problems)


def _rule_loc(name: str, route: ModelRoute, i: int) -> PathKey:
    """Where rule `i`'s `to` list is written (an alias is one rule)."""
    return ("models", name, "route", i, "to") if route.route is not None else ("models", name, "to")


def _check_backends(policy: Policy, problems: Problems) -> None:
    used = {target for route in policy.models.values() for r in route.rules for target in r.to}
    shadows = [policy.shadow, *(route.shadow for route in policy.models.values())]
    for shadow in (s for s in shadows if s is not None):  # shadow calls and judges use them
        used |= {name for name in (shadow.against, shadow.open, shadow.judge) if name}
    for name, backend in policy.backends.items():
        if backend.base_urls is not None:
            _check_replicas(policy, name, backend.base_urls, problems)
            if backend.load is not None:  # planning reads no load verdict per replica yet
                problems.add(("backends", name, "load"), "not supported with base_urls yet")
        elif not _http_url(backend.base_url):
            # The value is not echoed: a URL may carry credentials.
            problems.add(("backends", name, "base_url"), "must be an http:// or https:// URL")
        if backend.responses == "native" and backend.provider != "openai":
            problems.add(("backends", name, "responses"), "native needs provider: openai")
        prefill = ("backends", name, "tool_call_prefill")
        if backend.tool_call_prefill and not backend.tools:
            problems.add(prefill, "is set, but `tools` is false")
        if backend.tool_call_prefill and backend.provider != "openai":
            problems.add(prefill, "applies to provider: openai only")
        if name not in used and policy.savings_reference != name:
            problems.add(("backends", name), "no model routes to this backend", warning=True)


def _http_url(text: str) -> bool:
    url = urlsplit(text)
    return url.scheme in ("http", "https") and bool(url.hostname)


def _check_replicas(policy: Policy, name: str, urls: list[str], problems: Problems) -> None:
    seen: set[str] = set()
    for i, url in enumerate(urls):
        if not _http_url(url):
            problems.add(("backends", name, "base_urls", i), "must be an http:// or https:// URL")
        elif url in seen:
            problems.add(("backends", name, "base_urls", i), "the same URL is listed twice")
        seen.add(url)
        if replica_key(name, i) in policy.backends:
            # Its circuit would be the replica's.
            message = f"a backend named {replica_key(name, i)!r} clashes with this replica's name"
            problems.add(("backends", name, "base_urls", i), message)


def _check_targets(policy: Policy, name: str, route: ModelRoute, problems: Problems) -> None:
    known = ", ".join(sorted(policy.backends))
    for i, rule in enumerate(route.rules):
        for j, target in enumerate(rule.to):
            if target not in policy.backends:
                loc = (*_rule_loc(name, route, i), j)
                problems.add(loc, f"unknown backend {target!r} (known: {known})")


def _span(when: Condition | None) -> tuple[float, float] | None:
    """The scores a fixed condition takes, as [lo, hi); None for a calibrated one."""
    if when is None:
        return 0.0, math.inf
    if when.closed_share is not None:
        return None
    lo = when.difficulty_at_least or 0.0
    below = when.difficulty_below
    # Scores are at most 1: a range open above 1 reaches every score from lo up.
    return lo, math.inf if below is None or below > 1.0 else below


def _covered(span: tuple[float, float], taken: list[tuple[float, float]]) -> bool:
    lo, hi = span
    for a, b in sorted(taken):
        if a > lo:
            break
        lo = max(lo, b)
        if lo >= hi:
            return True
    return lo >= hi


def _check_rules(name: str, route: ModelRoute, problems: Problems) -> None:
    if route.route is None:
        return
    taken: list[tuple[float, float]] = []
    catch_all: int | None = None
    last = len(route.route) - 1
    for i, rule in enumerate(route.route):
        loc = ("models", name, "route", i)
        span = _span(rule.when)
        # The last rule is the default: its targets are every request's fallbacks.
        if i < last:
            if catch_all is not None:
                problems.add(
                    loc,
                    f"rule can never match: rule {catch_all} before it has no `when` "
                    "and takes every request",
                )
            elif span is not None and span[0] >= span[1]:
                lower = f"difficulty_at_least {span[0]:g}" if span[0] else "no score"
                problems.add(
                    loc, f"rule can never match: {lower} is not below difficulty_below {span[1]:g}"
                )
            elif _covered(span or (0.0, math.inf), taken):
                problems.add(
                    loc, "rule can never match: the rules before it take every score it would"
                )
        if rule.when is None and catch_all is None:
            catch_all = i
        if span is not None:
            taken.append(span)


def _check_model_names(policy: Policy, problems: Problems) -> None:
    seen: dict[str, str] = {}
    for name in policy.models:
        loc = ("models", name)
        if WILDCARD in name and name != WILDCARD:
            problems.add(
                loc, "only `*` alone is a wildcard; this name matches only itself, literally"
            )
        folded = " ".join(name.split()).casefold()
        if folded in seen:
            problems.add(
                loc, f"overlaps model {seen[folded]!r}: the names differ only in case or spacing"
            )
        elif name != name.strip():
            problems.add(loc, "has leading or trailing spaces; clients will not send them")
        seen.setdefault(folded, name)


def _check_savings_reference(policy: Policy, problems: Problems) -> None:
    ref = policy.savings_reference
    if ref is None:
        return
    loc = ("savings_reference",)
    backend = policy.backends.get(ref)
    if backend is None:
        known = ", ".join(sorted(policy.backends))
        problems.add(loc, f"unknown backend {ref!r} (known: {known})")
    elif backend.tier != "closed":
        problems.add(
            loc, f"backend {ref!r} is {backend.tier}-tier; the savings reference must be closed"
        )
    elif backend.price.input_per_mtok == 0 and backend.price.output_per_mtok == 0:
        problems.add(
            ("backends", ref, "price"), "the savings reference needs a price (it defines savings)"
        )


def _check_teams(policy: Policy, problems: Problems) -> None:
    owner: dict[str, str] = {}
    for team, spec in policy.teams.items():
        for i, key in enumerate(spec.keys):
            if key in owner:
                problems.add(("teams", team, "keys", i), f"key already belongs to {owner[key]!r}")
            owner.setdefault(key, team)
        for i, model in enumerate(spec.allowed_models or []):
            if model not in policy.models:
                problems.add(("teams", team, "allowed_models", i), f"unknown model {model!r}")


def _check_prices(policy: Policy, problems: Problems) -> None:
    flagged: set[str] = set()
    for team, spec in policy.teams.items():
        if spec.limits is None or spec.limits.budget_usd_per_day is None:
            continue
        models = spec.allowed_models if spec.allowed_models is not None else list(policy.models)
        for model in models:
            route = policy.models.get(model)
            for target in (t for r in (route.rules if route else []) for t in r.to):
                backend = policy.backends.get(target)
                if backend is None or target in flagged or "price" in backend.model_fields_set:
                    continue
                flagged.add(target)
                problems.add(
                    ("backends", target),
                    f"no price, but team {team!r} has a daily budget and can reach it through "
                    f"model {model!r}: set price (0 for free is fine)",
                )
    for name, backend in policy.backends.items():
        if (
            backend.tier == "closed"
            and name not in flagged
            and "price" not in backend.model_fields_set
        ):
            problems.add(
                ("backends", name), "closed-tier backend without a price: costs 0", warning=True
            )


def _check_shadows(policy: Policy, problems: Problems) -> None:
    shadows: list[tuple[PathKey, Shadow | None]] = [(("shadow",), policy.shadow)]
    shadows += [(("models", name, "shadow"), route.shadow) for name, route in policy.models.items()]
    for at, shadow in shadows:
        if shadow is None:
            continue
        for key, tier in (("against", "closed"), ("open", "open"), ("judge", None)):
            name = getattr(shadow, key)
            if name is None:
                continue
            backend = policy.backends.get(name)
            if backend is None:
                problems.add((*at, key), f"unknown backend {name!r}")
            elif tier is not None and backend.tier != tier:
                problems.add((*at, key), f"backend {name!r} is {backend.tier}-tier, not {tier}")
