"""Load-aware spill-over: each backend with a `load:` block has its `/metrics` polled.

vLLM's Prometheus text gives its queue (`vllm:num_requests_waiting`), its batch
(`vllm:num_requests_running`) and its KV cache use (`vllm:kv_cache_usage_perc`, 0-1;
`vllm:gpu_cache_usage_perc` before vLLM 0.10), one series per engine: queues are summed,
the cache is the fullest engine's. A value past its policy limit makes the backend saturated;
it is ready again once every value is back to `recover_at` of its limit (hysteresis).
Planning treats a saturated backend like one at its `max_concurrency`: routine traffic spills
to the next target (`gateway.planning`).

The poll runs off the request path, in each worker's loop, but once per replica: the
breaker board holds when a backend's next poll is due and the worker that finds it due
first claims it; the verdict is written to the board for every worker to read. A poll that
fails (refused, timed out, not 2xx, no known series) never marks a backend saturated: a
saturated verdict holds for `STALE_POLLS` intervals (each with its poll's timeout) unless a
later poll renews or lifts it,
then the backend counts as ready (its circuit and health checks deal with a backend that is
down), so neither failing polls nor a poller that stopped can pin it saturated.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from gateway.errors import GatewayError
from gateway.policy import Backend
from gateway.policy.resilience import LoadPolicy

if TYPE_CHECKING:
    from gateway.services import Services

log = logging.getLogger("gateway.load")

# Intervals a saturated verdict holds without a poll renewing it.
STALE_POLLS = 3
# The loop's pace while some backend has a `load:` block (and while none has).
TICK_S = 0.05
IDLE_TICK_S = 1.0

_SERIES = re.compile(
    rb"^vllm:(num_requests_waiting|num_requests_running|kv_cache_usage_perc|gpu_cache_usage_perc)"
    rb"(?:\{[^}\n]*\})?[ \t]+(\S+)",
    re.MULTILINE,
)


@dataclass(frozen=True, slots=True)
class Sample:
    """What one poll read (None: the backend did not export that series)."""

    waiting: float | None = None
    running: float | None = None
    kv_cache: float | None = None


def parse(text: bytes) -> Sample | None:
    """The load in a Prometheus text exposition; None when it has none of vLLM's series."""
    sums: dict[bytes, float] = {}
    for name, value in _SERIES.findall(text):
        try:
            number = float(value)
        except ValueError:
            continue
        if name.endswith(b"_perc"):
            sums[b"kv"] = max(sums.get(b"kv", 0.0), number)
        else:
            sums[name] = sums.get(name, 0.0) + number
    if not sums:
        return None
    return Sample(
        sums.get(b"num_requests_waiting"), sums.get(b"num_requests_running"), sums.get(b"kv")
    )


def saturated(policy: LoadPolicy, sample: Sample, was: bool) -> bool:
    """The verdict, with hysteresis: past a limit to saturate, back to `recover_at` to recover."""
    pairs = (
        (sample.waiting, policy.max_waiting),
        (sample.running, policy.max_running),
        (sample.kv_cache, policy.max_kv_cache),
    )
    known = [(value, limit) for value, limit in pairs if value is not None and limit is not None]
    if any(value > limit for value, limit in known):
        return True
    return was and not all(value <= limit * policy.recover_at for value, limit in known)


def metrics_url(backend: Backend, policy: LoadPolicy) -> str:
    """Where the backend's `/metrics` is: given, or base_url without its `/v1`."""
    if policy.metrics_url:
        return policy.metrics_url
    root = backend.base_url.removesuffix("/v1")
    return root + "/metrics"


def _headers(backend: Backend, url: str) -> dict[str, str]:
    """The backend's headers, and its key only when the URL is on the backend's own origin."""
    headers = {"accept-encoding": "identity", **backend.headers}
    key = backend.api_key.get_secret_value()
    own = urlsplit(url)[:2] == urlsplit(backend.base_url)[:2]
    if key and own:
        headers["authorization"] = f"Bearer {key}"
    return headers


async def poll(services: Services, backend: Backend, policy: LoadPolicy) -> bool | None:
    """Poll one backend and record the verdict; None if the poll failed."""
    name, m = backend.name, services.metrics
    url = metrics_url(backend, policy)
    sample: Sample | None = None
    try:
        status, text = await services.client.fetch(
            url, _headers(backend, url), backend=name, timeout_s=policy.timeout_s
        )
        sample = parse(text) if 200 <= status < 300 else None
    except (GatewayError, ValueError):  # refused, timed out, a URL aiohttp cannot use
        pass
    breaker = services.breakers[name]
    now = time.monotonic()
    if sample is None:
        m.load_polls.labels(name, "failed").inc()
        verdict = None
    else:
        m.load_polls.labels(name, "ok").inc()
        was = breaker.is_overloaded(now)
        verdict = saturated(policy, sample, was)
        breaker.load_polled(now, verdict, STALE_POLLS * (policy.interval_s + policy.timeout_s))
        for gauge, value in (
            (m.backend_queue_waiting, sample.waiting),
            (m.backend_queue_running, sample.running),
            (m.backend_kv_cache_usage, sample.kv_cache),
        ):
            if value is not None:
                gauge.labels(name).set(value)
        if verdict != was:
            state = "saturated" if verdict else "recovered"
            m.load_changes.labels(name, state).inc()
            log.warning("load %s", state, extra={"backend": name, "waiting": sample.waiting})
    m.backend_saturated.labels(name).set(1 if breaker.is_overloaded(now) else 0)
    return verdict


def unwatch(services: Services, name: str) -> None:
    """A backend no longer polled (its `load:` block or the backend itself left the policy,
    or it was disabled): its verdict lapses now, and its gauges stop claiming a queue (NaN:
    multiprocess metrics cannot drop a series)."""
    m = services.metrics
    if name in services.state.loaded.policy.backends:
        services.breakers[name].load_polled(time.monotonic(), False, 0.0)
    m.backend_saturated.labels(name).set(0)
    for gauge in (m.backend_queue_waiting, m.backend_queue_running, m.backend_kv_cache_usage):
        gauge.labels(name).set(float("nan"))


async def run(services: Services) -> None:
    """Poll every backend with a `load:` block when its interval is due (claimed per replica)."""
    watched: set[str] = set()
    while True:
        now = time.monotonic()
        batch: list[tuple[Backend, LoadPolicy]] = []
        was, watched = watched, set()
        for name, backend in services.state.loaded.policy.backends.items():
            policy = backend.load
            if policy is None or not backend.enabled:
                continue
            watched.add(name)
            if services.breakers[name].claim_poll(now, policy.interval_s):
                batch.append((backend, policy))
        for name in was - watched:
            unwatch(services, name)
        if batch:
            await asyncio.gather(*(poll(services, b, p) for b, p in batch))
        await asyncio.sleep(TICK_S if watched else IDLE_TICK_S)
