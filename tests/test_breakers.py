"""The breaker's state machine, and the watch that ends requests early, in-process."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.breaker_board import Board
from gateway.breakers import Admit, Breaker, State
from gateway.cancellation import Drain, Watch
from gateway.policy.resilience import BreakerPolicy

POLICY = BreakerPolicy(failures_to_open=3, open_s=5.0, half_open_probes=2)

# One step: take a place, or end an admitted request (success / failure / release), or wait.
steps = st.lists(
    st.one_of(
        st.just(("admit", 0.0)),
        st.tuples(st.sampled_from(["success", "failure", "release"]), st.just(0.0)),
        st.tuples(st.just("wait"), st.floats(0.0, 8.0)),
    ),
    max_size=60,
)


@settings(deadline=None, max_examples=300)
@given(steps=steps)
def test_invariants_under_any_sequence(steps: list[tuple[str, float]]) -> None:
    breaker, now = Breaker("b"), 0.0
    held: list[Admit] = []
    for op, dt in steps:
        if op == "wait":
            now += dt
        elif op == "admit":
            state = breaker.current(now)
            admitted = breaker.admit(now, POLICY)
            if state is State.OPEN:
                assert not admitted, "an open circuit admits nothing"
            if state is State.CLOSED:
                assert admitted is Admit.PASS
            if admitted:
                held.append(admitted)
        elif held:
            admitted = held.pop(0)
            if op == "success":
                breaker.success(admitted)
                assert breaker.current(now) is State.CLOSED, "a success closes at once"
            elif op == "failure":
                before = breaker.current(now)
                breaker.failure(now, POLICY, admitted)
                if before is not State.CLOSED:  # a probe, or a late failure
                    assert breaker.current(now) is State.OPEN, "a failure reopens it"
            else:
                breaker.release(admitted)
        assert breaker.probes == held.count(Admit.PROBE) <= POLICY.half_open_probes
        state = breaker.current(now)
        free = state is State.HALF_OPEN and breaker.probes < POLICY.half_open_probes
        assert breaker.usable(now, POLICY) == (state is State.CLOSED or free)


def test_consecutive_failures_open_then_one_probe_then_closed() -> None:
    policy = BreakerPolicy(failures_to_open=2, open_s=1.0, half_open_probes=1)
    moves: list[State] = []
    breaker = Breaker("b", on_change=lambda _, state: moves.append(state))
    breaker.failure(0.0, policy)
    assert breaker.current(0.0) is State.CLOSED
    breaker.failure(0.1, policy)
    assert breaker.current(0.5) is State.OPEN and not breaker.admit(0.5, policy)
    assert breaker.retry_after(0.5) == pytest.approx(0.6)
    probe = breaker.admit(1.2, policy)
    assert probe is Admit.PROBE
    assert [breaker.admit(1.2, policy) for _ in range(5)] == [Admit.REFUSED] * 5
    breaker.success(probe)
    assert breaker.admit(1.3, policy) is Admit.PASS
    assert moves == [State.OPEN, State.HALF_OPEN, State.CLOSED]


def test_health_checks_trip_and_hurry_the_probe() -> None:
    breaker = Breaker("b")
    breaker.trip(0.0, POLICY)
    assert breaker.current(1.0) is State.OPEN
    breaker.healthy(1.0)
    assert breaker.admit(1.0, POLICY) is Admit.PROBE


async def test_a_quiet_stream_is_cancelled_but_a_slow_send_is_not() -> None:
    async def relay(idle_s: float, send_s: float) -> str | None:
        watch = Watch()
        watch.watch_stream(idle_s, 10.0)
        try:
            watch.sending()
            await asyncio.sleep(send_s)  # a slow client: not the backend's fault
            watch.waiting()
            await asyncio.sleep(10)  # the backend goes quiet
        except asyncio.CancelledError:
            return watch.claim("idle")
        finally:
            watch.close()
        return None

    assert await asyncio.wait_for(relay(0.05, 0.12), 2) == "idle"


async def test_the_drain_cuts_what_is_left_and_claim_is_one_shot() -> None:
    drain = Drain(grace_s=0.05)

    async def request() -> str | None:
        watch = Watch(drain)
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            first, second = watch.claim("drain"), watch.claim("drain")
            assert second is None
            return first
        finally:
            watch.close()
        return None

    task = asyncio.create_task(request())
    await asyncio.sleep(0)
    assert len(drain) == 1
    drain.begin()
    assert await asyncio.wait_for(task, 2) == "drain"
    assert len(drain) == 0


async def test_a_cancel_that_is_not_ours_propagates() -> None:
    async def request() -> None:
        watch = Watch()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            assert watch.claim() is None
            raise
        finally:
            watch.close()

    task = asyncio.create_task(request())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_workers_share_one_board(tmp_path: Path) -> None:
    policy = BreakerPolicy(failures_to_open=2, open_s=1.0, half_open_probes=1)
    one, two = Board(tmp_path / "b"), Board(tmp_path / "b")  # as two workers map it
    try:
        a, b = one.breaker("vllm", None), two.breaker("vllm", None)
        assert one.breaker("other", None).offset != a.offset
        a.failure(0.0, policy)
        b.failure(0.1, policy)  # the second failure, counted in another worker
        assert a.current(0.5) is State.OPEN and not a.admit(0.5, policy)
        probe = b.admit(1.2, policy)
        assert probe is Admit.PROBE and a.admit(1.2, policy) is Admit.REFUSED
        b.success(probe)
        assert a.admit(1.3, policy) is Admit.PASS
        assert a.current(1.3) is State.CLOSED and a.probes == 0  # current() reads the board
    finally:
        one.close()
        two.close()


RATIO = BreakerPolicy(failures_to_open=1000, ratio_min_requests=20, ratio_window_s=10.0)


def test_an_error_ratio_opens_without_consecutive_failures() -> None:
    breaker = Breaker("b")
    for i in range(19):  # every other attempt fails: never two in a row
        if i % 2:
            breaker.failure(i * 0.1, RATIO)
        else:
            breaker.success(now=i * 0.1)
    assert breaker.current(1.9) is State.CLOSED  # 9 of 19: too few requests
    breaker.failure(2.0, RATIO)  # 10 of 20: 50%
    assert breaker.current(2.0) is State.OPEN


def test_the_ratio_forgets_old_attempts_and_the_last_opening() -> None:
    breaker = Breaker("b")
    for i in range(15):
        breaker.failure(i * 0.01, RATIO)
    for i in range(10):
        breaker.success(now=11.0 + i * 0.01)
    breaker.failure(11.5, RATIO)  # the 15 failures have left the 10 s window
    assert breaker.current(11.5) is State.CLOSED
    for i in range(19):
        breaker.failure(12.0 + i * 0.01, RATIO)
    assert breaker.current(12.5) is State.OPEN
    probe = breaker.admit(18.0, RATIO)
    breaker.success(probe, now=18.0)  # closed: what came before the opening is forgotten
    breaker.failure(18.1, RATIO)
    assert breaker.current(18.1) is State.CLOSED


outcomes = st.lists(st.tuples(st.floats(0.0, 2.0), st.booleans()), max_size=120)


@settings(deadline=None, max_examples=300)
@given(outcomes=outcomes, ratio=st.sampled_from([0.25, 0.5, 1.0]), volume=st.integers(1, 30))
def test_the_ratio_opens_exactly_when_the_window_says(
    outcomes: list[tuple[float, bool]], ratio: float, volume: int
) -> None:
    policy = BreakerPolicy(
        failures_to_open=1000, failure_ratio=ratio, ratio_min_requests=volume, ratio_window_s=5
    )
    breaker, now, seen = Breaker("b"), 100.0, []
    for dt, failed in outcomes:
        now += dt
        seen.append((int(now), failed))
        recent = [f for second, f in seen if second >= now - 5]
        if failed:
            breaker.failure(now, policy)
        else:
            breaker.success(now=now)
        should = failed and len(recent) >= volume and sum(recent) >= ratio * len(recent)
        assert (breaker.current(now) is State.OPEN) == should
        if should:
            return  # the reference model stops at the first opening


def test_retry_after_pauses_a_backend_for_every_worker(tmp_path: Path) -> None:
    board = Board(tmp_path / "board")
    try:
        one, two = board.breaker("b", None), board.breaker("b", None)
        one.pause(10.0, 30.0)
        assert two.paused(20.0) and not two.paused(40.0)
        assert two.retry_after(20.0) == pytest.approx(20.0)
        assert two.admit(20.0) is Admit.PASS  # a pause is not a circuit state
        # The ratio window is each worker's own; what it opens is shared.
        for i in range(20):
            one.failure(50.0 + i * 0.01, RATIO)
        assert two.current(50.5) is State.OPEN
    finally:
        board.close()
