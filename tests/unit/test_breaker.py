"""The circuit breaker (fastsmtp.breaker) and the adaptive rate (fastsmtp.ratelimit),
both sans-IO: driven here with a fake clock, no loop, no sockets."""

from __future__ import annotations

import pytest

from fastsmtp.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from fastsmtp.errors import SMTPConnectionError, SMTPResponseError
from fastsmtp.ratelimit import AdaptiveRate, RateLimiter
from fastsmtp.reply import Reply
from fastsmtp.retry import is_session_cut, is_slow_down


def test_isolated_failures_never_open_the_circuit():
    breaker = CircuitBreaker(threshold=3, base_delay=1.0, max_delay=8.0)
    for now in range(100):
        assert breaker.failure(now) is False
        assert breaker.failure(now) is False
        breaker.success()
    assert breaker.state(100.0) == CLOSED and breaker.trips == 0


def test_consecutive_failures_open_then_half_open_admits_one_trial():
    breaker = CircuitBreaker(threshold=3, base_delay=1.0, max_delay=8.0)
    assert [breaker.failure(10.0) for _ in range(3)] == [False, False, True]
    assert breaker.state(10.0) == OPEN
    assert not breaker.allows(10.5) and not breaker.admit(10.5)
    assert breaker.failure(10.6) is False  # a late failure: the trip already counted it
    assert breaker.state(11.0) == HALF_OPEN
    assert breaker.allows(11.0)
    assert breaker.admit(11.0) is True
    assert breaker.admit(11.0) is False  # one trial at a time
    assert not breaker.allows(11.0)
    breaker.success()
    assert breaker.state(11.0) == CLOSED and breaker.admit(11.0)


def test_failed_trials_back_off_exponentially_up_to_the_cap():
    breaker = CircuitBreaker(threshold=1, base_delay=1.0, max_delay=4.0)
    now = 0.0
    delays = []
    for _ in range(5):
        assert breaker.failure(now) is True  # closed (first) or half-open trial: a trip
        delays.append(breaker.retry_at - now)
        now = breaker.retry_at
        assert breaker.admit(now)
    assert delays == [1.0, 2.0, 4.0, 4.0, 4.0]
    assert breaker.trips == 5


def test_trip_opens_at_once():
    breaker = CircuitBreaker(threshold=5, base_delay=0.5)
    assert breaker.trip(0.0) is True
    assert breaker.state(0.1) == OPEN and breaker.state(0.5) == HALF_OPEN


@pytest.mark.parametrize("kwargs", [{"threshold": 0}, {"threshold": True},
                                    {"base_delay": 0}, {"base_delay": 2, "max_delay": 1}])
def test_bad_breaker_settings(kwargs):
    with pytest.raises(ValueError):
        CircuitBreaker(**kwargs)


# -- adaptive rate -------------------------------------------------------------------------

def test_adaptive_rate_cuts_to_what_the_server_accepted_then_recovers():
    rate = AdaptiveRate(floor=2, ceiling=None, period=1.0)
    assert rate.limit is None and not rate.throttled
    assert rate.slow_down(0.0, delivered=40) is True
    assert rate.limit == 40 and rate.throttled
    assert rate.slow_down(0.5, delivered=10) is False  # one cut per window
    assert rate.tick(1.0) is False  # the window since the last slow-down reply is not clean
    assert rate.slow_down(1.5, delivered=100) is True  # throttled: halve
    assert rate.limit == 20
    limits = []
    now = 2.5
    while rate.limit is not None:
        assert rate.tick(now) is True
        limits.append(rate.limit)
        now += 1.0
    assert limits[:3] == [22, 24, 27]  # additive: an eighth per clean window
    assert limits[-2] is not None and limits[-2] < 80 and len(limits) < 30  # released at 2x


def test_adaptive_rate_never_goes_below_the_floor_nor_above_the_ceiling():
    rate = AdaptiveRate(floor=3, ceiling=50, period=1.0)
    assert rate.limit == 50 and not rate.throttled
    rate.slow_down(0.0, delivered=0)
    assert rate.limit == 3
    for now in range(2, 200):
        rate.tick(float(now))
    assert rate.limit == 50 and not rate.throttled


def test_rate_limiter_set_limit_keeps_the_newest_starts():
    limiter = RateLimiter(4, 1.0)
    for _ in range(4):
        assert limiter.try_acquire()
    assert not limiter.try_acquire()
    limiter.set_limit(2)
    assert not limiter.try_acquire()
    assert limiter.limit == 2


# -- classification (retry.py) ---------------------------------------------------------------

def _err(code: int, text: str) -> SMTPResponseError:
    return SMTPResponseError("refused", reply=Reply(code, (text,)))


@pytest.mark.parametrize("code, text, slow", [
    (421, "4.7.28 Our system has detected an unusual rate of unsolicited mail", True),
    (454, "Throttling failure: Maximum sending rate exceeded.", True),
    (451, "4.7.1 Greylisted, please try again in 300 seconds", False),
    (451, "4.3.0 rate limit exceeded", True),
    (452, "too many messages per hour", True),
    (421, "4.3.2 too many messages in this session, closing", False),
    (421, "4.4.2 session too long", False),
    (451, "4.3.0 try again later", False),
    (554, "5.7.1 rate limited", False),  # permanent: a refusal, not a slow-down
])
def test_slow_down_replies(code: int, text: str, slow: bool):
    assert is_slow_down(_err(code, text)) is slow


def test_session_cut_needs_a_421_after_progress():
    cut = _err(421, "4.3.2 too many messages in this session")
    assert is_session_cut(cut, delivered_before=3)
    assert not is_session_cut(cut, delivered_before=0)
    assert not is_session_cut(_err(451, "4.3.0 later"), delivered_before=3)
    assert not is_session_cut(_err(421, "4.7.28 rate limited"), delivered_before=3)
    assert not is_session_cut(SMTPConnectionError("lost"), delivered_before=3)
