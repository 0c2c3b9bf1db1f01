"""``fastsmtp.metrics``: a pool's gauges, counters and latency histogram as
``prometheus_client`` exposes them (``generate_latest``), for pools sending to our
server on 127.0.0.1 (and to a dead port)."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from support.outcomes import Outcomes
from support.ports import refused_port
from support.server import serve
from support.wait import wait_until

from fastsmtp.errors import SMTPConnectionError, SMTPMaybeDelivered, SMTPRecipientsRefused
from fastsmtp.message import Envelope
from fastsmtp.metrics import register
from fastsmtp.pool import SMTPPool

SENDER = "sender@example.com"


def body(subject: str) -> bytes:
    return f"Subject: {subject}\r\n\r\nhello\r\n".encode()


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the registry's text output: (name, sorted labels) -> value."""
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def pool_for(port: int, **options: Any) -> SMTPPool:
    options.setdefault("retry_delay", 0.01)
    return SMTPPool(host="127.0.0.1", port=port, ignore_tls=True, **options)


async def test_counters_gauges_and_histogram_in_the_text_output() -> None:
    handler = Outcomes()
    registry = CollectorRegistry()
    async with serve(handler) as server:
        name = f"127.0.0.1:{server.port}"
        async with pool_for(server.port, max_attempts=2, max_connections=1, batch_size=1,
                            rate_limit=50) as pool:
            register(pool, registry)
            await pool.send(body("one"), Envelope(SENDER, ["a@example.com", "nobody@example.com"]))
            with pytest.raises(SMTPRecipientsRefused):
                await pool.send(body("two"), Envelope(SENDER, ["nobody@example.com"]))
            await pool.send(body("three"), Envelope(SENDER, ["busy@example.com"]))
            with pytest.raises(SMTPMaybeDelivered):
                await pool.send(body("drop"), Envelope(SENDER, ["b@example.com"]))
            # Hold one message on the wire and queue two more behind it.
            handler.gate = gate = asyncio.Event()
            held = handler.in_data
            sends = [asyncio.ensure_future(pool.send(body(str(i)), Envelope(SENDER, ["c@example.com"])))
                     for i in range(3)]
            await wait_until(lambda: handler.in_data == held + 1)
            during = samples(registry)
            text = generate_latest(registry).decode()
            gate.set()
            await asyncio.gather(*sends)
    pool_label = (("pool", name),)

    def outcome(o: str) -> tuple[tuple[str, str], ...]:
        return (("outcome", o), ("pool", name))

    assert f'fastsmtp_messages_total{{outcome="sent",pool="{name}"}} 2.0' in text
    assert during[("fastsmtp_messages_total", outcome("sent"))] == 2
    assert during[("fastsmtp_messages_total", outcome("refused"))] == 1
    assert during[("fastsmtp_messages_total", outcome("maybe_delivered"))] == 1
    assert during[("fastsmtp_messages_total", outcome("failed"))] == 0
    assert during[("fastsmtp_retries_total", pool_label)] == 1
    assert during[("fastsmtp_pool_connections", pool_label)] == 1
    assert during[("fastsmtp_pool_busy", pool_label)] == 1
    assert during[("fastsmtp_pool_idle", pool_label)] == 0
    assert during[("fastsmtp_pool_in_flight", pool_label)] == 1
    assert during[("fastsmtp_pool_queued", pool_label)] == 2
    assert during[("fastsmtp_pool_retrying", pool_label)] == 0
    assert during[("fastsmtp_pool_rate_limit", pool_label)] == 50
    # One histogram observation per settled message, by outcome.
    assert during[("fastsmtp_message_duration_seconds_count", outcome("sent"))] == 2
    assert during[("fastsmtp_message_duration_seconds_count", outcome("refused"))] == 1
    assert during[("fastsmtp_message_duration_seconds_count", outcome("maybe_delivered"))] == 1
    assert during[("fastsmtp_message_duration_seconds_count", outcome("failed"))] == 0
    # The retried message waited out a 0.01 s backoff: its duration is at least that.
    assert during[("fastsmtp_message_duration_seconds_sum", outcome("sent"))] >= 0.01
    inf = (("le", "+Inf"), ("outcome", "sent"), ("pool", name))
    assert during[("fastsmtp_message_duration_seconds_bucket", inf)] == 2
    after = samples(registry)
    assert after[("fastsmtp_messages_total", outcome("sent"))] == 5
    assert after[("fastsmtp_message_duration_seconds_count", outcome("sent"))] == 5


async def test_a_dead_server_counts_failures() -> None:
    registry = CollectorRegistry()
    with refused_port() as port:
        async with pool_for(port, max_attempts=2) as pool:
            register(pool, registry, name="dead")
            with pytest.raises(SMTPConnectionError):
                await pool.send(body("x"), Envelope(SENDER, ["a@example.com"]))
    got = samples(registry)
    assert got[("fastsmtp_messages_total", (("outcome", "failed"), ("pool", "dead")))] == 1
    assert got[("fastsmtp_retries_total", (("pool", "dead"),))] == 1
    assert got[("fastsmtp_message_duration_seconds_count",
                (("outcome", "failed"), ("pool", "dead")))] == 1
    assert ("fastsmtp_pool_rate_limit", (("pool", "dead"),)) not in got  # no limit set


async def test_several_pools_share_a_registry_by_name() -> None:
    registry = CollectorRegistry()
    async with serve(Outcomes()) as server:
        async with pool_for(server.port) as first, pool_for(server.port) as second:
            collector = register(first, registry, name="first")
            assert register(second, registry, name="second") is collector
            with pytest.raises(ValueError, match="distinct name="):
                register(second, registry, name="first")
            await first.send(body("x"), Envelope(SENDER, ["a@example.com"]))
            got = samples(registry)
            collector.remove("second")
            await second.send(body("y"), Envelope(SENDER, ["a@example.com"]))
            without = samples(registry)
    sent = ("fastsmtp_messages_total", (("outcome", "sent"), ("pool", "first")))
    assert got[sent] == 1
    assert got[("fastsmtp_messages_total", (("outcome", "sent"), ("pool", "second")))] == 0
    assert without[sent] == 1
    assert not any(("pool", "second") in labels for _, labels in without)


async def test_a_garbage_collected_pool_disappears() -> None:
    registry = CollectorRegistry()
    pool = pool_for(1)
    register(pool, registry, name="gone")
    assert samples(registry)[("fastsmtp_pool_connections", (("pool", "gone"),))] == 0
    del pool
    gc.collect()
    assert not any(("pool", "gone") in labels for _, labels in samples(registry))
