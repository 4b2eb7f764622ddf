"""Replay decision records through a policy with the server's own planning.

For each (model entry, endpoint) the log touches, `planner.make_plan` is asked once per
cut point of the score axis (`gateway.policy.steps.score_cuts`) with every backend
healthy; records then look their score up among the cuts (`numpy.searchsorted`). That is
exactly the server's choice for every score, at the cost of a binary search per record.

- `closed_share` rules: the threshold is the (1 - share) quantile (numpy's linear one) of
  the scores of the records the rule's model receives, cache hits and refusals excluded
  (the server's calibrator never sees those).
- Backends without their API key here are planned as if the key were set (production
  has it) unless `keys_as_configured`.
- Kept as recorded: cache hits (cost 0, their recorded backend and tier) and requests
  refused before routing (no backend, status below 500).
- Everything else costs its recorded tokens at the chosen backend's prices: the
  simulation assumes another backend would have used the same tokens.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from gateway.errors import GatewayError
from gateway.planning import resolve_model
from gateway.policy import Condition, ModelRoute, Policy, Rule
from gateway.policy.steps import score_cuts
from gateway.wire import Endpoint
from gateway_tools.replay_log import NO_BACKEND, BoolArray, IntArray, Log
from gateway_tools.simulate_split import draws, first_target, split_bands

_ENDPOINTS: tuple[Endpoint, ...] = ("chat", "completions", "embeddings")


@dataclass(frozen=True)
class Outcome:
    """Where the records go and what they cost under one policy (or as recorded)."""

    by_backend: dict[str, int]
    closed_share: float
    cost_usd: float
    backend: IntArray  # per record, a code into `names`
    names: list[str]
    closed: BoolArray  # per record, whether it ends on the closed tier

    def summary(self) -> dict[str, Any]:
        """The `candidate` / `baseline` object of the simulate JSON."""
        return {
            "by_backend": self.by_backend,
            "closed_share": self.closed_share,
            "cost_usd": self.cost_usd,
        }


def _counts(codes: IntArray, names: list[str]) -> dict[str, int]:
    counts = np.bincount(codes, minlength=len(names))
    pairs = [(names[i], int(c)) for i, c in enumerate(counts) if c]
    return dict(sorted(pairs, key=lambda p: (-p[1], p[0])))


def _share(closed: BoolArray) -> float:
    return float(closed.mean()) if closed.size else 0.0


def as_recorded(log: Log) -> Outcome:
    """The log itself: recorded backends, tiers and costs."""
    names = list(log.backend_names)
    return Outcome(
        _counts(log.backend, names),
        _share(log.closed),
        math.fsum(log.cost_usd.tolist()),
        log.backend,
        names,
        log.closed,
    )


def assume_keys(policy: Policy) -> Policy:
    """The policy with every backend usable, as in a deployment that has all its keys."""
    backends = {
        name: b if b.enabled else b.model_copy(update={"requires_api_key": False})
        for name, b in policy.backends.items()
    }
    return _with(policy, backends=backends)


def _with(policy: Policy, **changes: Any) -> Policy:
    fields = {name: getattr(policy, name) for name in Policy.model_fields}
    return Policy(**{**fields, **changes})


def _endpoint(name: str) -> Endpoint:
    # Doors that are not an endpoint family of their own (messages, responses) are chat.
    for endpoint in _ENDPOINTS:
        if endpoint == name:
            return endpoint
    return "chat"


def _route_keys(policy: Policy, log: Log) -> tuple[IntArray, list[str]]:
    """Per record, the index of the policy entry it resolves to (-1: refused)."""
    keys: list[str] = []
    allowed: dict[str, frozenset[str] | None] = {}
    for team, spec in policy.teams.items():
        allowed[team] = None if spec.allowed_models is None else frozenset(spec.allowed_models)
    pairs = log.model * max(len(log.team_names), 1) + log.team
    unique, inverse = np.unique(pairs, return_inverse=True)
    per_pair = np.empty(unique.size, np.int64)
    for i, pair in enumerate(unique.tolist()):
        model = log.model_names[pair // max(len(log.team_names), 1)]
        team = log.team_names[pair % max(len(log.team_names), 1)]
        try:
            key, _ = resolve_model(policy, model, allowed.get(team))
        except GatewayError:
            per_pair[i] = -1
            continue
        if key not in keys:
            keys.append(key)
        per_pair[i] = keys.index(key)
    return per_pair[inverse.reshape(-1)], keys


def _thresholds(
    policy: Policy, keys: list[str], route_of: IntArray, log: Log, replayed: BoolArray
) -> dict[tuple[str, int], float]:
    out: dict[tuple[str, int], float] = {}
    for k, key in enumerate(keys):
        rules = policy.models[key].rules
        shares = [
            (i, r.when.closed_share)
            for i, r in enumerate(rules)
            if r.when is not None and r.when.closed_share is not None
        ]
        if not shares:
            continue
        scores = log.score[(route_of == k) & replayed]
        scores = scores[~np.isnan(scores)]
        for i, share in shares:
            out[(key, i)] = float(np.quantile(scores, 1.0 - share)) if scores.size else 1.0
    return out


def replay(policy: Policy, log: Log, *, keys_as_configured: bool = False) -> Outcome:
    """Route every record of `log` through `policy` (see the module docstring)."""
    if not keys_as_configured:
        policy = assume_keys(policy)
    names = list(log.backend_names)
    names += [n for n in [*policy.backends, NO_BACKEND] if n not in names]
    code = {name: i for i, name in enumerate(names)}
    kept = log.hit | log.refused
    route_of, keys = _route_keys(policy, log)
    replayed = ~kept
    thresholds = _thresholds(policy, keys, route_of, log, replayed)
    out = np.where(kept, log.backend, code[NO_BACKEND])
    n_endpoints = max(len(log.endpoint_names), 1)
    group = np.where(replayed & (route_of >= 0), route_of * n_endpoints + log.endpoint, -1)
    order = np.argsort(group, kind="stable")
    values, starts = np.unique(group[order], return_index=True)
    ends = [*starts[1:].tolist(), order.size][: values.size]
    for value, start, end in zip(values.tolist(), starts.tolist(), ends, strict=True):
        if value < 0:
            continue
        key = keys[value // n_endpoints]
        endpoint = _endpoint(log.endpoint_names[value % n_endpoints])

        def threshold(i: int, key: str = key) -> float:
            return thresholds.get((key, i), 1.0)

        cuts = score_cuts(policy.models[key], threshold)
        table = np.array(
            [code[first_target(policy, key, endpoint, c, threshold)] for c in cuts], np.int64
        )
        unscored = code[first_target(policy, key, endpoint, None, threshold)]
        rows = order[start:end]
        scores = log.score[rows]
        at = np.clip(np.searchsorted(np.array(cuts), scores, side="right") - 1, 0, None)
        out[rows] = np.where(np.isnan(scores), unscored, table[at])
        if policy.models[key].splits:
            drawn = draws(len(log))[rows]
            for c, cut in enumerate(cuts):
                bands = split_bands(policy, key, endpoint, cut, threshold)
                if bands is None:
                    continue
                edges, targets = bands
                here = ~np.isnan(scores) & (at == c)
                band = np.searchsorted(edges, drawn[here], side="right")
                out[rows[here]] = np.array([code[t] for t in targets], np.int64)[band]
    return _outcome(policy, log, out, names, kept)


def _outcome(policy: Policy, log: Log, out: IntArray, names: list[str], kept: BoolArray) -> Outcome:
    backends = [policy.backends.get(n) for n in names]
    price_in = np.array([b.price.input_per_mtok if b else 0.0 for b in backends])
    price_out = np.array([b.price.output_per_mtok if b else 0.0 for b in backends])
    closed_tier = np.array([b is not None and b.tier == "closed" for b in backends], np.bool_)
    replayed = ~kept
    routed = out[replayed]
    per_record = (
        log.prompt_tokens[replayed] * price_in[routed]
        + log.completion_tokens[replayed] * price_out[routed]
    )
    # fsum: the total is the correctly rounded sum, whatever the order of the records.
    cost = math.fsum(per_record.tolist()) / 1e6
    closed = np.where(kept, log.closed, closed_tier[out])
    return Outcome(_counts(out, names), _share(closed), float(cost), out, names, closed)


def changed(log: Log, outcome: Outcome) -> int:
    """Records whose backend under `outcome` differs from the recorded one."""
    # Outcomes list the log's backend names first, so their codes compare directly.
    assert outcome.names[: len(log.backend_names)] == log.backend_names
    return int((outcome.backend != log.backend).sum())


def with_threshold(policy: Policy, threshold: float) -> Policy | None:
    """`policy` with the first conditional rule of every routed model set to
    `difficulty_at_least: threshold` (None if no model has one): one point of a sweep."""
    models: dict[str, ModelRoute] = {}
    touched = False
    for name, route in policy.models.items():
        rules = route.route
        first = next((i for i, r in enumerate(rules or []) if r.when is not None), None)
        if rules is None or first is None:
            models[name] = route
            continue
        touched = True
        swept = Rule(when=Condition(difficulty_at_least=threshold), to=rules[first].to)
        new_rules = [*rules[:first], swept, *rules[first + 1 :]]
        models[name] = ModelRoute(route=new_rules, cache=route.cache, description=route.description)
    return _with(policy, models=models) if touched else None


def sweep(
    policy: Policy, log: Log, thresholds: Iterable[float], *, keys_as_configured: bool = False
) -> list[tuple[float, float, float]]:
    """`(threshold, closed_share, cost_usd)` for each threshold (empty if nothing to sweep)."""
    points = []
    for t in thresholds:
        variant = with_threshold(policy, t)
        if variant is None:
            return []
        result = replay(variant, log, keys_as_configured=keys_as_configured)
        points.append((t, result.closed_share, result.cost_usd))
    return points


def summarise(log: Log, candidate: Outcome, baseline: Outcome) -> dict[str, Any]:
    """The simulate JSON (the shape given in the design contract)."""
    return {
        "records": len(log),
        "changed": changed(log, candidate),
        "candidate": candidate.summary(),
        "baseline": baseline.summary(),
    }


def transitions(log: Log, outcome: Outcome, top: int = 10) -> list[tuple[str, str, int]]:
    """The most common `(recorded backend, new backend, records)` moves."""
    assert outcome.names[: len(log.backend_names)] == log.backend_names
    width = len(outcome.names)
    moved = outcome.backend != log.backend
    pairs, counts = np.unique(
        log.backend[moved] * width + outcome.backend[moved], return_counts=True
    )
    rows = [
        (outcome.names[p // width], outcome.names[p % width], int(c))
        for p, c in zip(pairs.tolist(), counts.tolist(), strict=True)
    ]
    return sorted(rows, key=lambda r: (-r[2], r[0], r[1]))[:top]
