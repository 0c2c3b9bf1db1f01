"""SMTPPool behaviour over real sockets on 127.0.0.1 (both event loops, both cores).

The peer is our own SMTPServer with a handler that records what arrived and can be told
to misbehave (refuse, stall, drop the connection) for chosen messages; raw asyncio
servers stand in where exact bytes or timing matter (pipelining, dead servers).

The pool has one delivery path: a connection sends runs of up to ``batch_size`` messages
(``send_many`` fed lazily from the queue). Every test runs twice (the ``pool_path``
fixture, applied by ``make_pool``): with the default runs and with runs of one message
(``batch_size=1``), so retries, maybe-delivered, cancellation, max_messages, idle and
back-pressure rules hold for both. A few tests are about longer runs alone (pipelining
across messages, a loss mid-run, runs and max_messages).
"""

from __future__ import annotations

import asyncio
import email.message
import io

import pytest

from fastsmtp.errors import (
    SMTPAuthError,
    SMTPConnectionError,
    SMTPMaybeDelivered,
    SMTPPoolClosed,
    SMTPRecipientsRefused,
)
from fastsmtp.connection import SendResult
from fastsmtp.message import Envelope
from fastsmtp.pool import Auth, PoolOptions, SMTPPool, parse_url
from fastsmtp.server import SMTPServer

from support.peer import raw_server
from support.wait import wait_until

ENV = Envelope("sender@example.com", ["rcpt@example.com"])


def body(n: int, size: int = 200) -> bytes:
    return b"Subject: message %d\r\n\r\n" % n + b"x" * size + b"\r\n"


def message_number(content: bytes) -> int:
    return int(content.split(b"\r\n", 1)[0].rsplit(b" ", 1)[1])


class Recorder:
    """A handler that records every transaction and misbehaves on request.

    ``rcpt_action`` maps a recipient, ``data_action`` a message number, to what to do
    the first time: a reply string, ``"drop"`` (abort the connection), or (RCPT only)
    ``"stall"`` (answer far too late). Later attempts are accepted.
    """

    def __init__(self) -> None:
        self.delivered: list[int] = []
        self.attempts: dict[int, int] = {}
        self.ehlo = 0
        self.quit = 0
        self.mail_times: list[float] = []
        self.rcpt_action: dict[str, str] = {}
        self.data_action: dict[int, str] = {}
        self.data_delay = 0.0

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self.ehlo += 1
        session.host_name = hostname
        return responses

    async def handle_QUIT(self, server, session, envelope):
        self.quit += 1
        return "221 bye"

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        self.mail_times.append(asyncio.get_running_loop().time())
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        action = self.rcpt_action.pop(address, None)
        if action == "drop":
            server.transport.abort()
            return None
        if action == "stall":
            await asyncio.sleep(1.5)  # far past the client's socket_timeout
        if action:
            return action
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        n = message_number(envelope.content)
        self.attempts[n] = self.attempts.get(n, 0) + 1
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        action = self.data_action.pop(n, None) if self.attempts[n] == 1 else None
        if action == "drop":
            server.transport.abort()
            return None
        if action:
            return action
        self.delivered.append(n)
        return "250 OK queued"


@pytest.fixture
async def recorder():
    handler = Recorder()
    server = SMTPServer(handler, host="127.0.0.1", port=0)
    await server.start()
    handler.port = server.port
    try:
        yield handler
    finally:
        await server.close()


#: The pool has one delivery path (runs of ``send_many`` fed from the queue); every rule is
#: checked with the default runs and with runs of one message (``batch_size=1``).
POOL_PATHS: dict[str, dict[str, object]] = {
    "batched": {},
    "runs_of_one": {"batch_size": 1},
}
#: The current test's path options (set by ``pool_path``, read by ``make_pool``).
_PATH_OPTIONS: dict[str, object] = {}


@pytest.fixture(autouse=True, params=list(POOL_PATHS))
def pool_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test once per sending path; pools from ``make_pool`` take that path."""
    for key, value in POOL_PATHS[request.param].items():
        monkeypatch.setitem(_PATH_OPTIONS, key, value)
    return request.param


def make_pool(port: int, **options) -> SMTPPool:
    for key, value in _PATH_OPTIONS.items():
        options.setdefault(key, value)
    options.setdefault("retry_delay", 0.05)
    return SMTPPool(host="127.0.0.1", port=port, ignore_tls=True, **options)


async def test_sends_many_messages_each_exactly_once(recorder):
    async with make_pool(recorder.port, max_connections=4) as pool:
        results = await asyncio.gather(*(pool.send(body(i), ENV) for i in range(200)))
    assert all(r.accepted == ["rcpt@example.com"] for r in results)
    assert all(r.response.code == 250 for r in results)
    assert sorted(recorder.delivered) == list(range(200))
    assert recorder.ehlo <= 4


async def test_max_messages_replaces_the_connection_quietly(recorder):
    async with make_pool(recorder.port, max_connections=1, max_messages=10) as pool:
        results = [await pool.send(body(i), ENV) for i in range(25)]
    assert len(results) == 25
    assert sorted(recorder.delivered) == list(range(25))
    assert recorder.ehlo == 3  # 10 + 10 + 5
    assert recorder.quit == 3  # each retired connection said QUIT, the last on close


async def test_email_message_gives_its_own_envelope_and_bcc_is_not_sent(recorder):
    seen = []

    class Capture(Recorder):
        async def handle_DATA(self, server, session, envelope):
            seen.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
            return "250 OK"

    capture = Capture()
    server = SMTPServer(capture, host="127.0.0.1", port=0)
    await server.start()
    try:
        msg = email.message.EmailMessage()
        msg["From"] = "Alice <alice@example.com>"
        msg["To"] = "bob@example.com"
        msg["Cc"] = "carol@example.com"
        msg["Bcc"] = "dave@example.com"
        msg["Subject"] = "message 1"
        msg.set_content("hello")
        async with make_pool(server.port) as pool:
            result = await pool.send(msg)
    finally:
        await server.close()
    assert result.accepted == ["bob@example.com", "carol@example.com", "dave@example.com"]
    mail_from, rcpts, content = seen[0]
    assert mail_from == "alice@example.com"
    assert rcpts == ["bob@example.com", "carol@example.com", "dave@example.com"]
    assert b"dave@example.com" not in content and b"Bcc" not in content
    assert msg["Bcc"] == "dave@example.com"  # the caller's object is untouched


async def test_rate_limit_holds_in_every_window(recorder):
    pool = make_pool(recorder.port, max_connections=4, rate_limit=5, rate_delta=0.3)
    permits: list[float] = []
    acquire = pool._limiter.acquire

    async def recording_acquire():
        await acquire()
        # The limiter's own stamp for this permit: the lock hands over without a yield, so
        # the newest stamp is ours. A clock read here would add this task's wake-up delay.
        permits.append(pool._limiter._starts[-1])

    try_acquire = pool._limiter.try_acquire

    def recording_try_acquire():
        # A run takes the permits of the messages after its first without waiting.
        taken = try_acquire()
        if taken:
            permits.append(pool._limiter._starts[-1])
        return taken

    pool._limiter.acquire = recording_acquire
    pool._limiter.try_acquire = recording_try_acquire
    async with pool:
        await asyncio.gather(*(pool.send(body(i), ENV) for i in range(15)))
    assert len(permits) == 15 and len(recorder.mail_times) == 15
    # In any window of 0.3 s at most 5 messages started, however many connections
    # (an after-the-fact count, as nodemailer's, overshoots by up to max_connections).
    for first, sixth in zip(permits, permits[5:]):
        assert sixth - first >= 0.3 - 1e-6
    # On the wire too: the 15 MAILs span at least two full windows (less the first
    # MAIL's own network delay, given generous slack for a loaded machine).
    assert recorder.mail_times[-1] - recorder.mail_times[0] >= 0.6 - 0.1


async def test_close_does_not_wait_for_rate_limit_permits(recorder):
    pool = make_pool(recorder.port, max_connections=2, rate_limit=1, rate_delta=30)
    tasks = [asyncio.ensure_future(pool.send(body(i), ENV)) for i in range(4)]
    await asyncio.wait_for(tasks[0], 10)
    # The other slot now holds a job and waits for a permit (holding the limiter's lock).
    await wait_until(pool._limiter._lock.locked)
    await asyncio.wait_for(pool.close(), 5)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results[0].response.code == 250
    assert all(isinstance(r, SMTPPoolClosed) for r in results[1:])
    assert recorder.delivered == [0]


async def test_sender_waiting_for_queue_space_fails_when_the_pool_closes(recorder):
    recorder.data_delay = 0.3
    pool = make_pool(recorder.port, max_connections=1, max_queue=1, pipelining=False)
    tasks = [asyncio.ensure_future(pool.send(body(i), ENV)) for i in range(4)]
    # One in flight (its DATA at the server), one queued, two waiting for queue space.
    await wait_until(lambda: recorder.attempts.get(0) == 1 and len(pool._pending) == 1)
    await asyncio.wait_for(pool.close(), 5)
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)
    assert results[0].response.code == 250
    assert all(isinstance(r, SMTPPoolClosed) for r in results[1:])
    assert recorder.delivered == [0]


async def test_server_refusing_every_session_gets_no_reconnect_storm():
    accepted = 0

    async def refuse(reader, writer):
        nonlocal accepted
        accepted += 1
        writer.write(b"220 busy.test\r\n")
        await reader.readline()
        writer.write(b"250-busy.test\r\n250 PIPELINING\r\n")
        await reader.readline()
        writer.write(b"421 4.3.2 too busy, go away\r\n")
        writer.close()

    async with raw_server(refuse) as port:
        pool = make_pool(port, max_connections=2, retry_delay=0.05, retry_delay_max=0.2)
        results = await asyncio.wait_for(asyncio.gather(
            *(pool.send(body(i), ENV) for i in range(50)), return_exceptions=True), 20)
        await pool.close()
    assert all(isinstance(r, Exception) for r in results)
    # A connection that breaks before its first delivery counts as a failed connect:
    # the pool backs off and charges every waiting message (3 attempts each).
    assert accepted <= 3 * 2 + 2


async def test_permanent_greeting_is_not_retried():
    accepted = 0

    async def refuse(reader, writer):
        nonlocal accepted
        accepted += 1
        writer.write(b"554 5.7.1 no service for you\r\n")
        await writer.drain()
        writer.close()

    async with raw_server(refuse) as port:
        pool = make_pool(port, max_connections=1)
        results = await asyncio.gather(*(pool.send(body(i), ENV) for i in range(5)),
                                       return_exceptions=True)
        await pool.close()
    assert all(isinstance(r, SMTPConnectionError) and r.response_code == 554 for r in results)
    assert accepted == 1


async def test_transient_reply_is_retried_on_another_connection(recorder):
    recorder.data_action[3] = "451 4.3.0 try again"
    async with make_pool(recorder.port, max_connections=1) as pool:
        results = [await pool.send(body(i), ENV) for i in range(5)]
    assert all(r.response.code == 250 for r in results)
    assert recorder.attempts[3] == 2
    assert sorted(recorder.delivered) == [0, 1, 2, 3, 4]
    assert recorder.ehlo == 2  # the retry went out on a fresh connection


async def test_connection_dropped_before_the_dot_is_retried(recorder):
    recorder.rcpt_action["drop@example.com"] = "drop"
    env = Envelope("sender@example.com", ["drop@example.com"])
    async with make_pool(recorder.port) as pool:
        result = await pool.send(body(7), env)
    assert result.accepted == ["drop@example.com"]
    assert recorder.delivered == [7]
    assert recorder.ehlo == 2


async def test_permanent_failure_is_not_retried(recorder):
    recorder.rcpt_action["nobody@example.com"] = "550 5.1.1 no such user"
    env = Envelope("sender@example.com", ["nobody@example.com"])
    async with make_pool(recorder.port) as pool:
        with pytest.raises(SMTPRecipientsRefused) as info:
            await pool.send(body(1), env)
        assert info.value.rejected == ["nobody@example.com"]
        assert info.value.rejected_errors[0].response_code == 550
        # The pool and its connection go on.
        assert (await pool.send(body(2), ENV)).response.code == 250
    assert recorder.delivered == [2]
    assert recorder.ehlo == 1


async def test_partial_rejection_still_delivers_to_the_others(recorder):
    recorder.rcpt_action["bad@example.com"] = "550 5.1.1 no such user"
    env = Envelope("sender@example.com", ["good@example.com", "bad@example.com"])
    async with make_pool(recorder.port) as pool:
        result = await pool.send(body(1), env)
    assert result.accepted == ["good@example.com"]
    assert result.rejected == ["bad@example.com"]
    assert recorder.delivered == [1]


async def test_lost_after_the_dot_is_maybe_delivered_and_never_resent(recorder):
    recorder.data_action[5] = "drop"
    async with make_pool(recorder.port) as pool:
        with pytest.raises(SMTPMaybeDelivered):
            await pool.send(body(5), ENV)
        assert (await pool.send(body(6), ENV)).response.code == 250
    assert recorder.attempts == {5: 1, 6: 1}
    assert recorder.delivered == [6]


async def test_retries_are_bounded(recorder):
    class AlwaysBusy(Recorder):
        async def handle_DATA(self, server, session, envelope):
            self.attempts[1] = self.attempts.get(1, 0) + 1
            return "451 4.3.2 busy"

    busy = AlwaysBusy()
    server = SMTPServer(busy, host="127.0.0.1", port=0)
    await server.start()
    try:
        async with make_pool(server.port, max_attempts=3) as pool:
            with pytest.raises(Exception) as info:
                await pool.send(body(1), ENV)
    finally:
        await server.close()
    assert info.value.response_code == 451
    assert busy.attempts == {1: 3}


async def test_one_shot_stream_is_not_retried_but_a_file_is(recorder):
    recorder.data_action[1] = "451 later"
    recorder.data_action[2] = "451 later"
    async with make_pool(recorder.port) as pool:

        def chunks():
            yield body(1)

        with pytest.raises(Exception) as info:
            await pool.send(chunks(), ENV)
        assert info.value.response_code == 451
        result = await pool.send(io.BytesIO(body(2)), ENV)
    assert result.response.code == 250
    assert recorder.attempts == {1: 1, 2: 2}
    assert recorder.delivered == [2]


async def test_idle_connection_closed_by_the_server_is_replaced():
    handler = Recorder()
    server = SMTPServer(handler, host="127.0.0.1", port=0, timeout=0.3)
    await server.start()
    try:
        async with make_pool(server.port, max_connections=1) as pool:
            await pool.send(body(1), ENV)
            # The server times the idle connection out.
            await wait_until(lambda: server.connections == 0)
            result = await pool.send(body(2), ENV)
    finally:
        await server.close()
    assert result.response.code == 250
    assert handler.delivered == [1, 2]
    assert handler.ehlo == 2


async def test_idle_connections_are_closed_after_idle_timeout(recorder):
    pool = make_pool(recorder.port, max_connections=3, idle_timeout=0.2)
    await asyncio.gather(*(pool.send(body(i), ENV) for i in range(6)))
    assert recorder.quit == 0
    await wait_until(lambda: recorder.quit == recorder.ehlo and pool._slots == [])
    assert recorder.quit == recorder.ehlo
    assert pool._slots == []
    await pool.close()


async def test_dead_server_fails_the_queue_without_a_hot_loop():
    accepted = 0

    async def slam(reader, writer):
        nonlocal accepted
        accepted += 1
        writer.transport.abort()

    async with raw_server(slam) as port:
        pool = make_pool(port, max_connections=4, max_attempts=3, retry_delay=0.05)
        results = await asyncio.wait_for(
            asyncio.gather(*(pool.send(body(i), ENV) for i in range(50)),
                           return_exceptions=True),
            10,
        )
        await pool.close()
    assert all(isinstance(r, SMTPConnectionError) for r in results)
    # Each connect failure costs every waiting message an attempt: a handful of
    # connections, not one per message and attempt (150).
    assert accepted <= 3 * 4


async def test_wedged_connection_is_freed_by_its_timeout(recorder):
    recorder.rcpt_action["slow@example.com"] = "stall"
    env = Envelope("sender@example.com", ["slow@example.com"])
    async with make_pool(recorder.port, max_connections=2, socket_timeout=0.3) as pool:
        stuck = asyncio.ensure_future(pool.send(body(1), env))
        others = await asyncio.gather(*(pool.send(body(i), ENV) for i in range(2, 8)))
        result = await stuck
    assert all(r.response.code == 250 for r in others)
    assert result.response.code == 250  # retried after the timeout, on a fresh connection
    assert sorted(recorder.delivered) == list(range(1, 8))


async def test_cancelled_send_leaves_no_half_transaction(recorder):
    recorder.data_delay = 0.2
    # No pipelining: one message in flight, the next one certainly still queued.
    async with make_pool(recorder.port, max_connections=1, pipelining=False) as pool:
        first = asyncio.ensure_future(pool.send(body(1), ENV))
        queued = asyncio.ensure_future(pool.send(body(2), ENV))
        await wait_until(lambda: recorder.attempts.get(1) == 1)  # the first at the server
        first.cancel()  # in flight: the transaction completes on the connection
        queued.cancel()  # still queued: dropped without being sent
        recorder.data_delay = 0
        result = await pool.send(body(3), ENV)
    assert result.response.code == 250
    assert first.cancelled() and queued.cancelled()
    assert recorder.delivered == [1, 3]
    assert recorder.ehlo == 1


async def test_close_finishes_in_flight_and_fails_the_queue(recorder):
    recorder.data_delay = 0.2
    pool = make_pool(recorder.port, max_connections=1)
    tasks = [asyncio.ensure_future(pool.send(body(i), ENV)) for i in range(12)]
    await wait_until(lambda: recorder.attempts.get(0) == 1)  # the first at the server
    await pool.close()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    sent = [i for i, r in enumerate(results) if not isinstance(r, Exception)]
    # What was in flight (the first message, and any pipelined behind it) finished;
    # everything still queued failed with SMTPPoolClosed; nothing was lost or doubled.
    assert sent and sent == list(range(len(sent))) and len(sent) < 12
    assert all(results[i].response.code == 250 for i in sent)
    assert all(isinstance(r, SMTPPoolClosed) for r in results[len(sent):])
    assert sorted(recorder.delivered) == sent
    assert recorder.quit == 1
    with pytest.raises(SMTPPoolClosed):
        await pool.send(body(9), ENV)


async def test_backpressure_bounds_the_queue(recorder):
    recorder.data_delay = 0.02
    async with make_pool(recorder.port, max_connections=1, max_queue=3) as pool:
        tasks = [asyncio.ensure_future(pool.send(body(i), ENV)) for i in range(20)]
        peak = 0
        while not all(t.done() for t in tasks):
            peak = max(peak, len(pool._pending))
            await asyncio.sleep(0.005)
    assert peak <= 3
    assert peak == 3, "the queue never filled: the bound was not exercised"
    assert sorted(recorder.delivered) == list(range(20))


async def test_send_many_yields_every_result_and_keeps_a_bounded_window(recorder):
    async with make_pool(recorder.port, max_connections=2, max_queue=4) as pool:

        async def source():
            for i in range(300):
                yield (body(i), ENV)

        seen = []
        async for item, result in pool.send_many(source(), window=8):
            seen.append(message_number(item[0]))
            assert result.response.code == 250
            assert len(pool._pending) <= 4
    assert sorted(seen) == list(range(300))
    assert sorted(recorder.delivered) == list(range(300))


async def test_send_many_yields_errors_instead_of_raising(recorder):
    recorder.rcpt_action["nobody@example.com"] = "550 no"
    bad = Envelope("sender@example.com", ["nobody@example.com"])
    async with make_pool(recorder.port) as pool:
        outcomes = [r async for _, r in pool.send_many([(body(1), ENV), (body(2), bad)])]
    assert sum(isinstance(r, SMTPRecipientsRefused) for r in outcomes) == 1
    assert recorder.delivered == [1]


async def test_idle_notification(recorder):
    recorder.data_delay = 0.1
    # Without pipelining one busy connection is a full pool (with it, the slot would
    # take a second message at once, behind the first one's dot).
    pool = make_pool(recorder.port, max_connections=1, pipelining=False)
    calls = []
    pool.on_idle(lambda: calls.append(pool.is_idle()))
    assert pool.is_idle()
    task = asyncio.ensure_future(pool.send(body(1), ENV))
    await wait_until(lambda: recorder.attempts.get(1) == 1)  # in flight at the server
    assert not pool.is_idle()
    await pool.wait_idle()
    assert pool.is_idle() and task.done()
    assert calls and all(calls)
    await pool.close()


@pytest.mark.parametrize("pool_path", ["batched"], indirect=True)
async def test_pipelining_across_messages():
    """The next MAIL arrives before the server answered the previous message's dot.

    Not on runs of one: a run of one message has nothing to pipeline behind its dot.
    """
    events: list[str] = []

    async def server(reader, writer):
        writer.write(b"220 pipe.test ESMTP\r\n")
        await reader.readline()
        writer.write(b"250-pipe.test\r\n250 PIPELINING\r\n")
        buffered = b""
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                return
            buffered += chunk
            while True:
                if buffered.startswith(b"MAIL"):
                    end = buffered.find(b"DATA\r\n")
                    if end < 0:
                        break
                    events.append("envelope")
                    count = buffered[:end].count(b"\r\n")
                    writer.write(b"250 ok\r\n" * count + b"354 go\r\n")
                    buffered = buffered[end + 6:]
                elif b"\r\n.\r\n" in buffered:
                    _, buffered = buffered.split(b"\r\n.\r\n", 1)
                    events.append("dot")
                    await asyncio.sleep(0.05)  # the client must not wait for this reply
                    # Whatever arrived meanwhile shows whether the next envelope was sent.
                    # (It may have come in the same segment as the dot, or just after.)
                    try:
                        more = await asyncio.wait_for(reader.read(65536), 0.05)
                    except asyncio.TimeoutError:
                        more = b""
                    buffered += more
                    if buffered.startswith(b"MAIL FROM"):
                        events.append("next-envelope-before-reply")
                    writer.write(b"250 accepted\r\n")
                elif buffered.startswith(b"QUIT"):
                    writer.write(b"221 bye\r\n")
                    writer.close()
                    return
                else:
                    break

    async with raw_server(server) as port:
        async with make_pool(port, max_connections=1) as pool:
            results = await asyncio.gather(*(pool.send(body(i), ENV) for i in range(5)))
    assert all(r.response.code == 250 for r in results)
    assert events.count("dot") == 5
    assert events.count("next-envelope-before-reply") >= 3


async def test_auth_over_starttls_and_verify(server_ssl_context, client_ssl_context):
    from fastsmtp.server.auth import AuthResult

    def authenticator(server, session, envelope, mechanism, auth_data):
        return AuthResult(success=(auth_data.login, auth_data.password) == (b"user", b"pw"))

    handler = Recorder()
    server = SMTPServer(handler, host="127.0.0.1", port=0, tls_context=server_ssl_context,
                        require_auth=True, authenticator=authenticator)
    await server.start()
    try:
        pool = SMTPPool(host="127.0.0.1", port=server.port, tls=client_ssl_context,
                        require_tls=True, auth={"user": "user", "pass": "pw"})
        await pool.verify()
        assert (await pool.send(body(1), ENV)).response.code == 250
        await pool.close()
        wrong = SMTPPool(host="127.0.0.1", port=server.port, tls=client_ssl_context,
                         auth=("user", "wrong"))
        with pytest.raises(SMTPAuthError):
            await wrong.verify()
        with pytest.raises(SMTPAuthError):
            await wrong.send(body(2), ENV)
        await wrong.close()
    finally:
        await server.close()
    assert handler.delivered == [1]


def test_url_options_and_services():
    opts = parse_url("smtps://me%40example.com:p%40ss@mail.example.com:2465/"
                     "?maxConnections=8&rate_limit=5&socketTimeout=2.5&tls.verify=false")
    assert opts["host"] == "mail.example.com" and opts["port"] == 2465 and opts["secure"]
    assert opts["auth"] == Auth("me@example.com", "p@ss")
    assert opts["max_connections"] == 8 and opts["rate_limit"] == 5
    assert opts["socket_timeout"] == 2.5 and opts["tls"] == {"verify": False}
    assert "p@ss" not in repr(opts["auth"])
    with pytest.raises(ValueError, match="unknown option"):
        parse_url("smtp://host/?max_conections=3")
    with pytest.raises(ValueError, match="scheme"):
        parse_url("http://host/")
    pool = SMTPPool("smtp://localhost:2525?max_messages=7", max_connections=2)
    assert pool.pool_options == PoolOptions(max_connections=2, max_messages=7)
    assert (pool.options.host, pool.options.port) == ("localhost", 2525)
    gmail = SMTPPool(service="Gmail", auth=("me@gmail.com", "x"))
    assert (gmail.options.host, gmail.options.port, gmail.options.secure) == \
        ("smtp.gmail.com", 465, True)
    outlook = SMTPPool(service="outlook.com")
    assert outlook.options.require_tls and outlook.options.port == 587
    with pytest.raises(ValueError):
        SMTPPool(max_connections=0)
    # A nodemailer-style options mapping works as the first argument too.
    mapped = SMTPPool({"host": "mx.example.com", "port": 2525, "maxConnections": 3,
                       "ignoreTLS": True})
    assert (mapped.options.host, mapped.options.port, mapped.options.ignore_tls) == \
        ("mx.example.com", 2525, True)
    assert mapped.pool_options.max_connections == 3
    # A URL user without a password is an error, not a login with an empty password.
    with pytest.raises(ValueError, match="no password"):
        SMTPPool("smtp://me@mx.example.com")
    assert SMTPPool("smtp://me@mx.example.com", auth=("me", "pw")).auth == Auth("me", "pw")


# -- runs of messages (the batched path only) ------------------------------------------------

@pytest.mark.parametrize("pool_path", ["batched"], indirect=True)
async def test_loss_mid_batch_splits_maybe_delivered_from_retried(recorder) -> None:
    """A connection lost after message 3's dot: 3 is maybe delivered (never resent);
    the messages batched behind it were not written, so they are retried."""
    recorder.data_action[3] = "drop"
    # DATA (chunking=False): the next message's data waits for its 354.
    async with make_pool(recorder.port, max_connections=1, chunking=False) as pool:
        results = await asyncio.gather(
            *(pool.send(body(i), ENV) for i in range(1, 9)), return_exceptions=True
        )
    assert isinstance(results[2], SMTPMaybeDelivered)
    assert all(r.response.code == 250 for i, r in enumerate(results) if i != 2)
    assert sorted(recorder.delivered) == [1, 2, 4, 5, 6, 7, 8]
    assert recorder.attempts[3] == 1  # never resent


@pytest.mark.parametrize("pool_path", ["batched"], indirect=True)
async def test_loss_mid_window_under_bdat_is_bounded_by_the_window(recorder) -> None:
    """BDAT: the connection is lost after message 3's data; only the messages of its
    window (pipeline_window=2) are maybe delivered (never resent), the rest retried."""
    recorder.data_action[3] = "drop"
    async with make_pool(recorder.port, max_connections=1, pipeline_window=2) as pool:
        results = await asyncio.gather(
            *(pool.send(body(i), ENV) for i in range(1, 9)), return_exceptions=True
        )
    # Which of its neighbours shares message 3's window depends on how the replies and
    # the drop interleave (the server may close before writing its reply to 2; 4 may
    # have been written behind 3 before the loss was seen). What is fixed: 3 is maybe
    # delivered, at most pipeline_window messages are, they are neighbours, none of them
    # is resent, and every other message is delivered exactly once.
    uncertain = [i + 1 for i, r in enumerate(results) if isinstance(r, SMTPMaybeDelivered)]
    assert 3 in uncertain and len(uncertain) <= 2, results
    assert uncertain == list(range(uncertain[0], uncertain[0] + len(uncertain)))
    sent = [i + 1 for i, r in enumerate(results) if isinstance(r, SendResult)]
    assert sent == [n for n in range(1, 9) if n not in uncertain], results
    assert all(recorder.attempts.get(n, 0) <= 1 for n in uncertain)  # never resent
    assert sorted(n for n in recorder.delivered if n not in uncertain) == sent


@pytest.mark.parametrize("pool_path", ["batched"], indirect=True)
async def test_batches_respect_max_messages(recorder) -> None:
    """A batch never runs a connection past max_messages."""
    async with make_pool(recorder.port, max_connections=1, max_messages=4) as pool:
        await asyncio.gather(*(pool.send(body(i), ENV) for i in range(10)))
    assert sorted(recorder.delivered) == list(range(10))
    assert recorder.ehlo == 3  # 4 + 4 + 2
