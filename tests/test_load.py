"""Load-aware spill-over in-process: reading vLLM's /metrics, the verdict, planning, the board."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.breaker_board import Board
from gateway.breakers import Breakers
from gateway.errors import UpstreamUnavailable
from gateway.load import Sample, metrics_url, parse, saturated
from gateway.planning import make_plan
from gateway.policy import parse_policy
from gateway.policy.resilience import LoadPolicy

# The shape vLLM 0.32 serves (two engines, the by-reason series that must not be summed in).
EXPOSITION = b"""\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="smollm2"} 4.0
vllm:num_requests_running{engine="1",model_name="smollm2"} 3.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="smollm2"} 5.0
vllm:num_requests_waiting{engine="1",model_name="smollm2"} 2.0
vllm:num_requests_waiting_by_reason{engine="0",model_name="smollm2",reason="capacity"} 5.0
vllm:kv_cache_usage_perc{engine="0",model_name="smollm2"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="smollm2"} 0.5
vllm:num_requests_waiting_created{engine="0"} 1.7e9
"""


def test_vllm_series_are_summed_per_engine_and_the_fullest_cache_counts() -> None:
    assert parse(EXPOSITION) == Sample(waiting=7.0, running=7.0, kv_cache=0.5)


def test_the_cache_series_of_older_vllm_is_read_and_others_are_not_a_sample() -> None:
    old = b'vllm:gpu_cache_usage_perc{model_name="m"} 0.93\nvllm:num_requests_waiting 0\n'
    assert parse(old) == Sample(waiting=0.0, running=None, kv_cache=0.93)
    assert parse(b"# nothing here\nprocess_cpu_seconds_total 3.0\n") is None
    assert parse(b"<html>not metrics</html>") is None


POLICY = LoadPolicy(max_waiting=4, max_kv_cache=0.9, recover_at=0.8)


@pytest.mark.parametrize(
    ("waiting", "expected"),
    [
        # up past 4 (saturated), stays while above 3.2, recovers at 3, stays ready up to 4
        ([0, 4, 5, 4, 3.5, 3, 4, 5], [False, False, True, True, True, False, False, True]),
        ([10, 0, 10, 0], [True, False, True, False]),
    ],
)
def test_the_verdict_has_hysteresis(waiting: list[float], expected: list[bool]) -> None:
    was, seen = False, []
    for value in waiting:
        was = saturated(POLICY, Sample(waiting=value, kv_cache=0.1), was)
        seen.append(was)
    assert seen == expected


@given(st.floats(0, 100), st.floats(0, 1), st.booleans(), st.sampled_from([None, 0.0, 2.0, 50.0]))
def test_any_value_past_its_limit_saturates_and_recovery_needs_every_value_low(
    waiting: float, kv: float, was: bool, running: float | None
) -> None:
    sample = Sample(waiting=waiting, running=running, kv_cache=kv)
    verdict = saturated(POLICY, sample, was)
    if waiting > 4 or kv > 0.9:
        assert verdict
    elif waiting <= 3.2 and kv <= 0.72:
        assert not verdict  # running has no limit here: it never holds a backend back
    else:
        assert verdict is was  # between the two edges nothing changes


def test_a_policy_needs_a_limit_and_an_http_metrics_url() -> None:
    with pytest.raises(ValueError, match="at least one of"):
        LoadPolicy()
    with pytest.raises(ValueError, match="http"):
        LoadPolicy(max_waiting=1, metrics_url="vllm:8000/metrics")


PLAN_POLICY = """
backends:
  vllm:
    provider: openai
    base_url: "http://vllm:8000/v1"
    load: {max_waiting: 4}
  vllm-strict:
    provider: openai
    base_url: "http://vllm2:8000/v1"
    load: {max_waiting: 4, when_saturated: reject, interval_s: 2.5,
           metrics_url: "http://vllm2:9000/stats"}
  gpt: {provider: openai, base_url: "http://g/v1", api_key: k, tier: closed}
models:
  m: {to: [vllm, gpt]}
  strict: {to: [vllm-strict, gpt]}
"""


def _plan(model: str, breakers: Breakers, *, closed_allowed: bool = True) -> tuple[str, ...]:
    policy = parse_policy(PLAN_POLICY, "load.yaml").policy
    route = policy.models[model]
    plan = make_plan(
        policy, model, route, "chat", None, lambda _: 1.0, breakers, closed_allowed=closed_allowed
    )
    return (plan.reason, plan.spilled_from, plan.spill_reason, *(b.name for b in plan.targets))


def test_a_saturated_backend_spills_to_the_next_target_and_back() -> None:
    breakers = Breakers()
    assert _plan("m", breakers) == ("alias", None, "", "vllm", "gpt")
    breakers["vllm"].load_polled(time.monotonic(), True, 60.0)
    assert _plan("m", breakers) == ("spillover", "vllm", "load", "gpt", "vllm")
    breakers["vllm"].load_polled(time.monotonic(), False, 60.0)
    assert _plan("m", breakers) == ("alias", None, "", "vllm", "gpt")


def test_a_self_hosted_team_is_never_spilled_closed_it_queues_or_gets_a_503() -> None:
    breakers = Breakers()
    breakers["vllm"].load_polled(time.monotonic(), True, 60.0)
    breakers["vllm-strict"].load_polled(time.monotonic(), True, 60.0)
    assert _plan("m", breakers, closed_allowed=False) == ("alias", None, "", "vllm")
    with pytest.raises(UpstreamUnavailable) as info:
        _plan("strict", breakers, closed_allowed=False)
    assert info.value.http_status == 503
    assert info.value.headers["retry-after"] == "3"  # its next poll, rounded up
    # Routine traffic with `reject` still spills while a ready target is left.
    assert _plan("strict", breakers)[:3] == ("spillover", "vllm-strict", "load")


def test_without_a_load_block_a_verdict_is_ignored() -> None:
    breakers = Breakers()
    breakers["gpt"].load_polled(time.monotonic(), True, 60.0)  # never, in practice: no `load:`
    policy = parse_policy(PLAN_POLICY.replace("[vllm, gpt]", "[gpt, vllm]"), "l.yaml").policy
    plan = make_plan(policy, "m", policy.models["m"], "chat", None, lambda _: 1.0, breakers)
    assert [b.name for b in plan.targets] == ["gpt", "vllm"] and plan.reason == "alias"


def test_the_metrics_url_is_the_server_root_unless_given() -> None:
    policy = parse_policy(PLAN_POLICY, "load.yaml").policy
    vllm, strict = policy.backends["vllm"], policy.backends["vllm-strict"]
    assert vllm.load is not None and strict.load is not None
    assert metrics_url(vllm, vllm.load) == "http://vllm:8000/metrics"
    assert metrics_url(strict, strict.load) == "http://vllm2:9000/stats"


def test_a_saturated_verdict_lapses_unless_a_poll_renews_it() -> None:
    breaker = Breakers()["vllm"]
    assert not breaker.is_overloaded(0.0)
    breaker.load_polled(1.0, True, 3.0)
    assert breaker.is_overloaded(3.9)
    assert not breaker.is_overloaded(4.0), "no poll since (failed, or the poller stopped)"
    breaker.load_polled(3.5, True, 3.0)
    assert breaker.is_overloaded(6.0)
    breaker.load_polled(4.0, False, 3.0)
    assert not breaker.is_overloaded(4.0)


def test_workers_share_one_poll_per_interval_and_its_verdict(tmp_path: Path) -> None:
    path = tmp_path / "board"
    one, two = Board(path), Board(path)
    try:
        a, b = one.breaker("vllm", None), two.breaker("vllm", None)
        assert a.claim_poll(100.0, 1.0)
        assert not b.claim_poll(100.5, 1.0), "claimed by the other worker until 101"
        a.load_polled(100.2, True, 3.0)
        assert b.is_overloaded(101.0) and not b.is_overloaded(103.2)
        assert b.claim_poll(101.0, 1.0) and not a.claim_poll(101.2, 1.0)
        b.load_polled(101.1, False, 3.0)
        assert not a.is_overloaded(101.2)
        # The circuit's own slot is untouched by the load region.
        assert a.usable(101.2) and one.closed(a.offset)
    finally:
        one.close()
        two.close()


async def test_a_load_block_taken_out_on_reload_lets_its_verdict_and_gauges_go() -> None:
    """The policy is reloaded without `vllm`'s `load:` block: the saturated verdict its last
    poll left lapses at once, and its gauges stop showing the old queue."""
    import asyncio
    import math
    from types import SimpleNamespace

    from gateway import load
    from gateway.metrics import Metrics

    class Unreachable:
        async def fetch(self, *args: object, **kwargs: object) -> tuple[int, str]:
            raise UpstreamUnavailable("no /metrics here")

    with_block = parse_policy(PLAN_POLICY, "load.yaml").policy
    without = parse_policy(PLAN_POLICY.replace("    load: {max_waiting: 4}\n", ""), "l.yaml")
    metrics, breakers = Metrics(), Breakers()
    state = SimpleNamespace(loaded=SimpleNamespace(policy=with_block))
    services = SimpleNamespace(
        metrics=metrics, breakers=breakers, state=state, client=Unreachable()
    )
    breakers["vllm"].load_polled(time.monotonic(), True, 600.0)
    metrics.backend_queue_waiting.labels("vllm").set(9)
    metrics.backend_saturated.labels("vllm").set(1)
    poller = asyncio.create_task(load.run(services))  # type: ignore[arg-type]
    try:
        await asyncio.sleep(3 * load.TICK_S)
        assert breakers["vllm"].is_overloaded(time.monotonic())  # failed polls keep the verdict
        state.loaded.policy = without.policy
        await asyncio.sleep(3 * load.TICK_S)
    finally:
        poller.cancel()
    assert not breakers["vllm"].is_overloaded(time.monotonic())
    registry = metrics.registry
    assert registry.get_sample_value("gateway_backend_saturated", {"backend": "vllm"}) == 0
    waiting = registry.get_sample_value("gateway_backend_queue_waiting", {"backend": "vllm"})
    assert waiting is not None and math.isnan(waiting)
