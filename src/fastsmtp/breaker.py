"""A circuit breaker for one SMTP server: is it down, or did one connection fail?

Theory of operation
-------------------
A pool opens connections to a server; most failures are isolated (a reset, a stall, a
load balancer dropping one session) and say nothing about the next connection. Only
*consecutive* failures say the server is down. The breaker tells the two apart:

* **closed** (the normal state): connections may be opened. Each failed connection adds
  one to a count of consecutive failures; a healthy one resets it. At ``threshold``
  failures in a row the circuit *opens* (a *trip*).
* **open**: no connection may be opened until ``retry_at``. The delay doubles with each
  trip in a row (``base_delay``, ``2 * base_delay``, ... up to ``max_delay``), so a dead
  server costs a handful of connection attempts, never a hot loop.
* **half-open** (``retry_at`` has passed): one *trial* connection may be opened. If it
  proves healthy the circuit closes; if it fails the circuit opens again, for longer.

The caller decides what a trip costs: the pool charges every waiting message one attempt
per trip (when no other server can take them), so a dead server fails the queue after
``max_attempts`` trips, in bounded time, while an isolated failure costs nobody anything.

Sans-IO: the breaker never reads a clock or sleeps. Every method that depends on time
takes ``now`` (any monotonic clock, in seconds: the pool passes its loop's time), so the
tests drive it with a fake clock.
"""

from __future__ import annotations

__all__ = ["CircuitBreaker", "CLOSED", "OPEN", "HALF_OPEN", "DEFAULT_THRESHOLD"]

#: The state names (also what :attr:`fastsmtp.pool.SMTPPool.circuits` reports).
CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half-open"

#: Consecutive failed connections that open the circuit by default: one or two failures
#: in a row happen to healthy servers; three in a row, without a success between, rarely.
DEFAULT_THRESHOLD = 3


class CircuitBreaker:
    """Closed / open / half-open state of one server (see the module docs).

    Args:
        threshold: Consecutive failures that open the circuit (at least 1).
        base_delay: Seconds the circuit stays open after the first trip.
        max_delay: Cap of that delay, which doubles with each trip in a row.

    Attributes:
        failures: Consecutive failures counted while closed.
        trips: Trips since the last success (0 while healthy).
        retry_at: While open, when the trial connection may be opened.
    """

    __slots__ = ("threshold", "base_delay", "max_delay", "failures", "trips", "retry_at",
                 "_open", "_trial")

    def __init__(self, threshold: int = DEFAULT_THRESHOLD, base_delay: float = 0.5,
                 max_delay: float = 30.0) -> None:
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
            raise ValueError("the breaker threshold must be an int of at least 1")
        if not (base_delay > 0 and max_delay >= base_delay):
            raise ValueError("breaker delays must be positive, max_delay >= base_delay")
        self.threshold = threshold
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.failures = 0
        self.trips = 0
        self.retry_at = 0.0
        self._open = False
        self._trial = False  # a half-open trial connection is under way

    def __repr__(self) -> str:
        return f"<CircuitBreaker {'open' if self._open else 'closed'} failures={self.failures} " \
               f"trips={self.trips}>"

    @property
    def closed(self) -> bool:
        """True in the normal state (cheap: no clock needed)."""
        return not self._open

    def state(self, now: float) -> str:
        """:data:`CLOSED`, :data:`OPEN` or :data:`HALF_OPEN` at time ``now``."""
        if not self._open:
            return CLOSED
        return HALF_OPEN if now >= self.retry_at else OPEN

    def allows(self, now: float) -> bool:
        """May a connection be opened now? (A question: nothing changes.)"""
        if not self._open:
            return True
        return now >= self.retry_at and not self._trial

    def admit(self, now: float) -> bool:
        """Take the permission to open a connection: half-open grants one trial.

        Returns:
            True when the caller may connect (it then reports :meth:`success` or
            :meth:`failure` for that connection).
        """
        if not self._open:
            return True
        if now >= self.retry_at and not self._trial:
            self._trial = True
            return True
        return False

    def success(self) -> None:
        """A connection proved healthy: close the circuit, forget every failure."""
        self.failures = 0
        self.trips = 0
        self._open = False
        self._trial = False

    def failure(self, now: float) -> bool:
        """A connection failed (could not be opened, or broke before doing any work).

        Failures reported while the circuit is already open (connections that were
        started before it opened) change nothing: the trip already counted them.

        Returns:
            True when this failure opened the circuit (a trip).
        """
        if self._open:
            if now >= self.retry_at:  # half-open: the trial (or a late one) failed
                return self.trip(now)
            return False
        self.failures += 1
        if self.failures >= self.threshold:
            return self.trip(now)
        return False

    def trip(self, now: float) -> bool:
        """Open the circuit now (also for a failure that needs no second opinion).

        Returns:
            True (a trip always happens), so ``return breaker.trip(now)`` reads well.
        """
        self.trips += 1
        delay = min(self.max_delay, self.base_delay * (1 << min(self.trips - 1, 30)))
        self.retry_at = now + delay
        self.failures = 0
        self._open = True
        self._trial = False
        return True
