"""Prometheus metrics for SMTPPools (extra ``metrics``, ``prometheus_client``).

Example::

    from prometheus_client import start_http_server
    from fastsmtp.metrics import register

    pool = SMTPPool("smtp://localhost:2525")
    register(pool)          # into prometheus_client's default registry
    start_http_server(9100)

What a registry then exposes, each with a ``pool`` label (``host:port`` unless
:func:`register` was given a ``name``):

* gauges, read from :meth:`SMTPPool.stats() <fastsmtp.pool.SMTPPool.stats>` at each
  scrape: ``fastsmtp_pool_connections``, ``fastsmtp_pool_busy``, ``fastsmtp_pool_idle``,
  ``fastsmtp_pool_queued``, ``fastsmtp_pool_retrying``, ``fastsmtp_pool_in_flight``, and
  ``fastsmtp_pool_rate_limit`` (messages per ``rate_period``) for a rate-limited pool;
* counters: ``fastsmtp_messages_total`` with an ``outcome`` label (``sent``,
  ``refused``, ``failed``, ``maybe_delivered``: see :mod:`fastsmtp.observe`) and
  ``fastsmtp_retries_total``;
* a histogram ``fastsmtp_message_duration_seconds`` (labels ``pool`` and ``outcome``):
  seconds from ``send()`` to the outcome, one observation per message, fed by a pool
  observer.

The counters are the pool's own totals (since the pool was created); the histogram
counts the messages sent after :func:`register`. Scrapes may come from another thread
(``start_http_server``): they only read the pool's integers.

This module imports ``prometheus_client``; ``import fastsmtp`` never imports it.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Histogram
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "fastsmtp.metrics needs prometheus_client: pip install 'aiofastsmtp[metrics]' "
        "(or pip install prometheus_client)"
    ) from exc

from .observe import OUTCOMES, MessageEvent

if TYPE_CHECKING:
    from .pool import SMTPPool

__all__ = ["DURATION_BUCKETS", "PoolCollector", "register"]

#: Histogram buckets (seconds) of the per-message duration: a local relay answers in
#: milliseconds, a remote provider in tenths of a second, a throttled queue in minutes.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0, 60.0, 300.0, float("inf"))

#: ``stats()`` keys exported as gauges, with their help text.
_GAUGES = (
    ("connections", "Open SMTP connections."),
    ("busy", "Connection slots holding a message."),
    ("idle", "Connection slots waiting for a message."),
    ("queued", "Messages waiting for a connection slot."),
    ("retrying", "Messages waiting out a retry backoff."),
    ("in_flight", "Messages in a transaction on a connection."),
)

#: One collector per registry (a registry refuses two collectors with the same names).
_COLLECTORS: weakref.WeakKeyDictionary[CollectorRegistry, PoolCollector] = \
    weakref.WeakKeyDictionary()


class _Recorder:
    """The pool observer feeding the histogram: its label children resolved once."""

    __slots__ = ("children",)

    def __init__(self, latency: Histogram, name: str) -> None:
        self.children = {outcome: latency.labels(name, outcome) for outcome in OUTCOMES}

    def __call__(self, event: MessageEvent) -> None:
        self.children[event.outcome].observe(event.duration)


class PoolCollector(Collector):
    """A ``prometheus_client`` collector for any number of pools (see the module doc).

    Normally made by :func:`register`, which keeps one per registry.

    Args:
        buckets: The duration histogram's bucket bounds in seconds.
    """

    def __init__(self, buckets: Sequence[float] = DURATION_BUCKETS) -> None:
        # Not registered anywhere itself: this collector yields its samples.
        self._latency = Histogram(
            "fastsmtp_message_duration_seconds",
            "Seconds from send() to the message's outcome.",
            ["pool", "outcome"], registry=None, buckets=buckets)
        # The pools are held weakly (a collector must not keep a pool alive), with the
        # observer each was given, to take it off again.
        self._pools: dict[str, tuple[weakref.ref[SMTPPool], _Recorder]] = {}

    def add(self, pool: SMTPPool, name: str | None = None) -> str:
        """Export ``pool`` under the label ``pool=name`` (default ``host:port``).

        Returns:
            The label value.

        Raises:
            ValueError: Another live pool is exported under that name.
        """
        name = name or f"{pool.options.host}:{pool.options.port}"
        known = self._pools.get(name)
        if known is not None and known[0]() is not None:
            raise ValueError(f"a pool named {name!r} is already registered: give "
                             "fastsmtp.metrics.register() a distinct name=")
        recorder = _Recorder(self._latency, name)
        pool.add_observer(recorder)
        self._pools[name] = (weakref.ref(pool), recorder)
        return name

    def remove(self, name: str) -> None:
        """Stop exporting the pool named ``name`` (its samples disappear)."""
        ref, recorder = self._pools.pop(name)
        pool = ref()
        if pool is not None:
            pool.remove_observer(recorder)
        for outcome in OUTCOMES:
            self._latency.remove(name, outcome)

    def _families(self) -> tuple[dict[str, GaugeMetricFamily], GaugeMetricFamily,
                                 CounterMetricFamily, CounterMetricFamily]:
        gauges = {key: GaugeMetricFamily(f"fastsmtp_pool_{key}", text, labels=["pool"])
                  for key, text in _GAUGES}
        rate = GaugeMetricFamily("fastsmtp_pool_rate_limit",
                                 "Messages allowed per rate period.", labels=["pool"])
        messages = CounterMetricFamily("fastsmtp_messages", "Messages settled, by outcome.",
                                       labels=["pool", "outcome"])
        retries = CounterMetricFamily("fastsmtp_retries",
                                      "Failed attempts given another attempt.", labels=["pool"])
        return gauges, rate, messages, retries

    def describe(self) -> Iterator[Metric]:
        """The metric families (no samples), so that a registry can check the names."""
        gauges, rate, messages, retries = self._families()
        yield from gauges.values()
        yield from (rate, messages, retries)
        yield from self._latency.describe()

    def collect(self) -> Iterator[Metric]:
        """The current samples of every live pool."""
        gauges, rate, messages, retries = self._families()
        for name, (ref, _recorder) in list(self._pools.items()):
            pool = ref()
            if pool is None:  # garbage-collected: forget it
                self.remove(name)
                continue
            stats = pool.stats()
            for key, family in gauges.items():
                family.add_metric([name], float(stats[key] or 0))
            limit, period = stats["rate_limit"], stats["rate_period"]
            if limit is not None and period:
                rate.add_metric([name], float(limit))
            for outcome in OUTCOMES:
                messages.add_metric([name, outcome], float(stats[outcome] or 0))
            retries.add_metric([name], float(stats["retried"] or 0))
        yield from gauges.values()
        yield from (rate, messages, retries)
        yield from self._latency.collect()


def register(pool: SMTPPool, registry: CollectorRegistry | None = None, *,
             name: str | None = None) -> PoolCollector:
    """Export ``pool``'s metrics in ``registry`` (default: ``prometheus_client.REGISTRY``).

    Several pools may share a registry: each gets its own ``pool`` label (``name``,
    default ``host:port``).

    Returns:
        The registry's :class:`PoolCollector`.

    Raises:
        ValueError: Another pool is already registered under that name in the registry.
    """
    registry = REGISTRY if registry is None else registry
    collector = _COLLECTORS.get(registry)
    if collector is None:
        collector = PoolCollector()
        registry.register(collector)
        _COLLECTORS[registry] = collector
    collector.add(pool, name)
    return collector
