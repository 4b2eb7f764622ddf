"""The per-worker retry budget and the per-request attempt cap, in-process."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import UpstreamStatusError
from gateway.policy.resilience import Retries
from gateway.providers.base import retry_after_seconds, status_error
from gateway.retry_budget import RetryBudget

# One step: a first attempt, a retry asked for, or time passing.
steps = st.lists(
    st.one_of(
        st.just(("first", 0.0)),
        st.just(("retry", 0.0)),
        st.tuples(st.just("wait"), st.floats(0.0, 4.0)),
    ),
    max_size=200,
)
policies = st.builds(
    Retries,
    ratio=st.floats(0.0, 1.0),
    min_per_s=st.sampled_from([0.0, 0.1, 1.0, 3.0]),
    window_s=st.sampled_from([1.0, 5.0, 10.0]),
)


@settings(deadline=None, max_examples=300)
@given(steps=steps, policy=policies)
def test_retries_never_exceed_the_share_of_first_attempts(
    steps: list[tuple[str, float]], policy: Retries
) -> None:
    budget, now = RetryBudget(), 1000.0
    events: list[tuple[int, str]] = []  # what the budget took, by second
    for op, dt in steps:
        if op == "wait":
            now += dt
            continue
        if op == "first":
            budget.first(now, policy)
            events.append((int(now), "first"))
            continue
        # The reference: the same window, counted from scratch.
        recent = [kind for second, kind in events if second > int(now) - policy.window_s]
        room = policy.ratio * recent.count("first") + policy.min_per_s * policy.window_s
        allowed = recent.count("retry") + 1 <= room
        assert budget.try_retry(now, policy) == allowed
        if allowed:
            events.append((int(now), "retry"))
            # At the moment a retry is allowed, the window's retries fit its budget. (Later
            # the first attempts that paid for it may leave the window before it does.)
            firsts, retries = budget.counts(now, policy)
            assert retries <= policy.ratio * firsts + policy.min_per_s * policy.window_s


def test_an_outage_gets_a_fifth_more_load_not_double() -> None:
    policy, budget = Retries(), RetryBudget()
    retried = 0
    for i in range(1000):  # 100 requests a second for 10 s, every first attempt fails
        now = 50.0 + i / 100
        budget.first(now, policy)
        retried += budget.try_retry(now, policy)
    # 20% of the first attempts plus the floor of 3 a second (30 over the window)
    assert 200 <= retried <= 230


def test_the_budget_comes_back_as_the_window_slides() -> None:
    policy, budget = Retries(ratio=0.0, min_per_s=0.5, window_s=10.0), RetryBudget()
    assert [budget.try_retry(0.0, policy) for _ in range(6)] == [True] * 5 + [False]
    assert not budget.try_retry(9.9, policy)
    assert budget.try_retry(10.0, policy)  # second 0 has left the window


def test_retry_after_is_read_in_seconds() -> None:
    assert retry_after_seconds("30") == 30.0
    assert retry_after_seconds(" 1.5 ") == 1.5
    assert retry_after_seconds(None) is None
    # An HTTP date counts from now; one already past means no pause; nonsense is unreadable.
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    at = 1_445_412_480.0  # that date, in epoch seconds
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=at - 12) == 12.0
    assert retry_after_seconds("not a date") is None
    assert retry_after_seconds("-1") is None and retry_after_seconds("nan") is None
    err = status_error("b", 429, b"", "7")
    assert isinstance(err, UpstreamStatusError) and err.retry_after_s == 7.0
