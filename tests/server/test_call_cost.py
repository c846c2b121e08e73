"""The overload estimates of `server.call_cost`, fed measured costs (no clock involved)."""

from __future__ import annotations

import pytest

from server.call_cost import MIN_OBSERVATIONS, WINDOW, CallCost, Quantile, expected_wait


def linear_cost(per_request: float = 0.010) -> CallCost:
    """A cost fitted on calls of 1, 2 and 4 requests costing ``per_request`` each."""
    cost = CallCost()
    for n in (1, 2, 4) * 3:
        cost.observe(n, per_request * n)
    return cost


def test_quantile_is_the_nearest_rank_of_the_recent_window():
    q = Quantile(0.9, window=10)
    assert q.value == 0.0
    for x in range(1, 11):
        q.observe(float(x))
    assert q.value == 9.0
    for _ in range(10):  # the old values leave the window
        q.observe(0.5)
    assert q.value == 0.5
    with pytest.raises(ValueError):
        Quantile(1.5)


def test_quantile_of_a_few_observations_is_their_median():
    q = Quantile(0.9)
    for x in (1.0, 1.0, 50.0):  # a cold first call among the first few
        q.observe(x)
    assert q.value == 1.0
    for _ in range(MIN_OBSERVATIONS - 3):
        q.observe(1.0)
    assert q.value == 1.0  # the 0.9 quantile of ten, one slow: still the usual call
    for _ in range(3):
        q.observe(50.0)
    assert q.value == 50.0  # slow calls that keep coming count


def test_one_cold_call_at_start_does_not_refuse_what_follows():
    cost = CallCost()
    cost.observe(1, 0.010)
    cost.observe(1, 0.500)  # a stall on the second call
    cost.observe(1, 0.010)
    assert cost.seconds(1) < 3 * cost.mean_seconds(1)


def test_call_cost_fits_fixed_and_per_request_cost():
    cost = CallCost()
    assert cost.seconds(8) == 0.0  # nothing measured: nothing is refused
    for n in (1, 4, 16, 2, 8, 32) * 3:
        cost.observe(n, 0.002 + 0.0005 * n)
    assert cost.seconds(1) == pytest.approx(0.0025, rel=1e-6)
    assert cost.seconds(64) == pytest.approx(0.034, rel=1e-6)


def test_call_cost_without_spread_is_proportional_above_the_seen_size():
    cost = CallCost()
    for _ in range(10):
        cost.observe(2, 0.010)
    assert cost.seconds(1) == pytest.approx(0.010)  # never below the measured call
    assert cost.seconds(8) == pytest.approx(0.040)  # no fixed cost assumed: an upper bound


def test_call_cost_follows_recent_calls():
    cost = CallCost()
    for _ in range(50):
        cost.observe(4, 0.100)
    for _ in range(100):
        cost.observe(4, 0.010)
    assert cost.seconds(4) == pytest.approx(0.010, rel=0.1)  # 0.95**100: the old calls weigh 0.6%


def test_slow_calls_make_the_estimate_a_high_quantile_not_the_mean():
    cost = CallCost()
    for _ in range(8):  # one call in five is three times slower (a rebuilt context, a CPU stall)
        for seconds in (0.010, 0.010, 0.010, 0.010, 0.030):
            cost.observe(4, seconds)
    assert cost.mean_seconds(4) < 0.016  # the mean: 4 of 5 calls would pass it, 1 of 5 by far
    assert cost.seconds(4) == pytest.approx(0.030, rel=0.15)


def test_an_old_slow_call_stops_counting_once_out_of_the_window():
    cost = CallCost()
    for _ in range(20):
        cost.observe(4, 0.010)
    for _ in range(8):  # a spell of slow calls
        cost.observe(4, 0.100)
    assert cost.seconds(4) > 2 * cost.mean_seconds(4)
    for _ in range(WINDOW + 100):
        cost.observe(4, 0.010)
    assert cost.seconds(4) == pytest.approx(0.010, rel=0.01)


def test_expected_wait_counts_the_running_call_full_batches_and_its_own_call():
    cost = linear_cost()  # d(n) = 10 ms per request; recent calls of 2.4 requests on average
    assert expected_wait(cost, 0, 4) == pytest.approx(0.010)  # idle: runs at once, alone
    assert expected_wait(cost, 3, 4) == pytest.approx(0.040)  # joins the 3 queued: a call of 4
    assert expected_wait(cost, 9, 4) == pytest.approx(2 * 0.040 + 0.020)
    running = expected_wait(cost, 0, 4, running=2, running_for=0.005)
    assert running == pytest.approx(0.015 + 0.020)  # its call also takes those arriving meanwhile
    assert expected_wait(cost, 0, 4, running=2, running_for=1.0) == pytest.approx(0.020)


def test_expected_wait_sizes_its_own_call_like_recent_calls_under_load():
    cost = CallCost()
    for n in (30, 34) * 5:
        cost.observe(n, 0.001 * n)  # d(n) = 1 ms per request, calls of 32 on average
    running = expected_wait(cost, 1, 64, running=32, running_for=0.0)
    assert running == pytest.approx(0.032 + 0.032)  # not a call of 2
    assert expected_wait(cost, 1, 16, running=32, running_for=0.0) == pytest.approx(0.032 + 0.016)
    assert expected_wait(cost, 1, 64) == pytest.approx(0.002)  # nothing running: starts at once


def test_expected_wait_adds_the_hand_off():
    cost = linear_cost()
    assert expected_wait(cost, 0, 4, handoff=0.007) == pytest.approx(0.017)
