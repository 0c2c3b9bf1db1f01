"""``SMTPPool.stats()`` and the per-message observers, against our server on 127.0.0.1.

One handler plays every outcome: ``nobody@`` recipients are refused (550), ``busy@`` is
deferred once (450) and taken on the retry, a message whose subject is ``drop`` loses its
connection after the final dot (maybe delivered), and DATA can be held open by a gate so
the pool's gauges are read while a message is on the wire.
"""

from __future__ import annotations

import asyncio
import contextvars
import subprocess
import sys
from typing import Any

import pytest
from support.env import child_env
from support.outcomes import Outcomes
from support.ports import refused_port
from support.server import serve
from support.wait import wait_until

from fastsmtp.errors import (
    SMTPConnectionError,
    SMTPMaybeDelivered,
    SMTPRecipientsRefused,
    SMTPResponseError,
)
from fastsmtp.message import Envelope
from fastsmtp.observe import MessageEvent
from fastsmtp.pool import SMTPPool

SENDER = "sender@example.com"


def body(subject: str) -> bytes:
    return f"Subject: {subject}\r\n\r\nhello\r\n".encode()


def pool_for(port: int, **options: Any) -> SMTPPool:
    options.setdefault("retry_delay", 0.01)
    return SMTPPool(host="127.0.0.1", port=port, ignore_tls=True, **options)


async def test_stats_count_every_outcome_once_and_observers_see_each_message() -> None:
    handler = Outcomes()
    events: list[MessageEvent] = []
    async with serve(handler) as server, pool_for(server.port, max_attempts=2) as pool:
        port = server.port
        remove = pool.add_observer(events.append)
        ok = await pool.send(body("one"), Envelope(SENDER, ["a@example.com", "nobody@example.com"]))
        with pytest.raises(SMTPRecipientsRefused):
            await pool.send(body("two"), Envelope(SENDER, ["nobody@example.com"]))
        retried = await pool.send(body("three"), Envelope(SENDER, ["busy@example.com"]))
        with pytest.raises(SMTPMaybeDelivered):
            await pool.send(body("drop"), Envelope(SENDER, ["b@example.com"]))
        stats = pool.stats()
        remove()
        await pool.send(body("unobserved"), Envelope(SENDER, ["c@example.com"]))
        after = pool.stats()
    assert ok.rejected == ["nobody@example.com"] and retried.accepted == ["busy@example.com"]
    assert {k: stats[k] for k in ("sent", "refused", "failed", "maybe_delivered", "retried")} \
        == {"sent": 2, "refused": 1, "failed": 0, "maybe_delivered": 1, "retried": 1}
    assert (stats["queued"], stats["retrying"], stats["in_flight"]) == (0, 0, 0)
    assert stats["rate_limit"] is None and stats["rate_period"] is None
    assert after["sent"] == 3  # counters do not depend on observers
    assert [e.outcome for e in events] == ["sent", "refused", "sent", "maybe_delivered"]
    assert [e.recipients for e in events] == [2, 1, 1, 1]
    assert [e.code for e in events] == [250, 550, 250, None]
    assert [(e.host, e.port) for e in events] == [("127.0.0.1", port)] * 4
    assert events[0].size == ok.size > 0 and events[0].result is ok
    assert events[1].size == 0 and isinstance(events[1].error, SMTPRecipientsRefused)
    assert all(e.duration >= 0 for e in events)
    # The retried message's duration spans both attempts and the backoff between them.
    assert events[2].duration >= 0.01


async def test_a_dead_server_counts_failures_and_retries() -> None:
    events: list[MessageEvent] = []
    with refused_port() as port:
        async with pool_for(port, max_attempts=3) as pool:
            pool.add_observer(events.append)
            results = await asyncio.gather(
                *(pool.send(body(str(i)), Envelope(SENDER, ["a@example.com"])) for i in range(2)),
                return_exceptions=True)
            stats = pool.stats()
    assert all(isinstance(r, SMTPConnectionError) for r in results)
    assert (stats["failed"], stats["sent"], stats["refused"]) == (2, 0, 0)
    assert stats["retried"] == 4  # each message: 3 attempts, 2 of them retried
    assert stats["connections"] == 0
    assert [(e.outcome, e.code, e.size) for e in events] == [("failed", None, 0)] * 2


async def test_a_refusal_after_the_last_attempt_is_refused_with_its_code() -> None:
    class Busy(Outcomes):
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            return "451 4.3.2 try again later"

    events: list[MessageEvent] = []
    async with serve(Busy()) as server, pool_for(server.port, max_attempts=2) as pool:
        pool.add_observer(events.append)
        with pytest.raises(SMTPResponseError):
            await pool.send(body("x"), Envelope(SENDER, ["a@example.com"]))
        stats = pool.stats()
    assert (stats["refused"], stats["retried"]) == (1, 1)
    assert [(e.outcome, e.code) for e in events] == [("refused", 451)]


async def test_gauges_while_a_message_is_on_the_wire() -> None:
    handler = Outcomes()
    handler.gate = asyncio.Event()
    async with serve(handler) as server, \
            pool_for(server.port, max_connections=1, batch_size=1, rate_limit=100) as pool:
        before = pool.stats()
        sends = [asyncio.ensure_future(pool.send(body(str(i)), Envelope(SENDER, ["a@example.com"])))
                 for i in range(3)]
        await wait_until(lambda: handler.in_data == 1)
        during = pool.stats()
        handler.gate.set()
        await asyncio.gather(*sends)
        await wait_until(lambda: pool.stats()["idle"] == 1)
        idle = pool.stats()
    assert (before["connections"], before["busy"], before["idle"], before["queued"]) == (0, 0, 0, 0)
    assert (during["connections"], during["busy"], during["idle"]) == (1, 1, 0)
    assert (during["in_flight"], during["queued"], during["sent"]) == (1, 2, 0)
    assert (during["rate_limit"], during["rate_period"]) == (100, 1.0)
    assert (idle["connections"], idle["busy"], idle["in_flight"], idle["sent"]) == (1, 0, 0, 3)


async def test_observers_run_in_the_senders_context_and_a_broken_one_is_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    who: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")
    seen: list[str] = []

    def broken(event: MessageEvent) -> None:
        raise RuntimeError("observer bug")

    async def send_as(pool: SMTPPool, name: str) -> None:
        who.set(name)
        await pool.send(body(name), Envelope(SENDER, ["a@example.com"]))

    async with serve(Outcomes()) as server, pool_for(server.port, max_connections=1) as pool:
        pool.add_observer(broken)
        pool.add_observer(lambda event: seen.append(who.get()))
        await asyncio.gather(send_as(pool, "alice"), send_as(pool, "bob"))
        # send_many's messages are observed in the context of its consumer.
        who.set("carol")
        async for _item, result in pool.send_many(
                [(body("c"), Envelope(SENDER, ["a@example.com"]))]):
            assert not isinstance(result, Exception)
    assert sorted(seen[:2]) == ["alice", "bob"] and seen[2:] == ["carol"]
    failures = [r for r in caplog.records if r.getMessage().startswith("pool observer")]
    assert len(failures) == 3 and all(str(r.exc_info[1]) == "observer bug" for r in failures)


def test_importing_fastsmtp_imports_no_optional_package() -> None:
    code = ("import sys, fastsmtp, fastsmtp.pool, fastsmtp.observe; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('opentelemetry', 'prometheus_client')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=child_env(), timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(("module", "package", "extra"), [
    ("fastsmtp.tracing", "opentelemetry", "aiofastsmtp[otel]"),
    ("fastsmtp.metrics", "prometheus_client", "aiofastsmtp[metrics]"),
])
def test_without_the_package_the_integration_says_which_extra_to_install(
        module: str, package: str, extra: str) -> None:
    code = (f"import sys; sys.modules[{package!r}] = None\n"
            "import fastsmtp, fastsmtp.pool\n"
            f"try:\n    import {module}\n"
            "except ImportError as exc:\n    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=child_env(), timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"pip install '{extra}'" in done.stdout
