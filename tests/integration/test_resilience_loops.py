"""Issue 10, finding 3: pools across fork() and across event loops.

* ``SyncSMTPPool`` in a forked child (``multiprocessing`` with the fork start method, and
  a bare ``os.fork()``): the child opens its own connection, never writes on the
  parent's, and the parent's pool goes on with its session intact;
* an ``SMTPPool`` made at module level and used by a loop per run, and one used from a
  second loop while its own still runs (a clear error).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
import warnings
from typing import Any

import pytest

from fastsmtp.message import Envelope
from fastsmtp.pool import SMTPPool
from fastsmtp.server import SMTPServerThread
from fastsmtp.sync import SyncSMTPPool

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

ENV = Envelope("sender@example.com", ["rcpt@example.com"])
LOOPS = [False] + ([True] if uvloop is not None else [])
LOOP_IDS = ["asyncio"] + (["uvloop"] if uvloop is not None else [])
#: Seconds a child may take at most (it is killed after: a hang fails, never blocks).
CHILD_LIMIT = 60


class PeerRecorder:
    """Records (client address, content) of every message."""

    def __init__(self) -> None:
        self.messages: list[tuple[Any, bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((session.peer, envelope.content))
        return "250 OK"


@pytest.fixture
def server() -> Any:
    handler = PeerRecorder()
    with SMTPServerThread(handler, port=0) as runner:
        runner.handler = handler
        yield runner


def _child_send(pool: SyncSMTPPool, write_fd: int) -> None:
    """In the child: send through the inherited pool, report the reply code."""
    try:
        code = pool.send(b"Subject: child\r\n\r\nchild\r\n", ENV, timeout=20).response.code
        pool.close()
        os.write(write_fd, str(code).encode())
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        os.write(write_fd, repr(exc).encode()[:500])


def _run_child(how: str, pool: SyncSMTPPool) -> str:
    read_fd, write_fd = os.pipe()
    try:
        if how == "multiprocessing":
            proc = multiprocessing.get_context("fork").Process(
                target=_child_send, args=(pool, write_fd))
            proc.start()
            proc.join(CHILD_LIMIT)
            if proc.is_alive():
                proc.kill()
                proc.join()
                return "hung"
            assert proc.exitcode == 0
        else:
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child
                try:
                    _child_send(pool, write_fd)
                finally:
                    os._exit(0)
            os.waitpid(pid, 0)  # the child's send has a timeout: it ends
        os.close(write_fd)
        write_fd = -1
        return os.read(read_fd, 1000).decode()
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)


@pytest.mark.parametrize("use_uvloop", LOOPS, ids=LOOP_IDS)
@pytest.mark.parametrize("how", ["multiprocessing", "os.fork"])
def test_sync_pool_in_a_forked_child(server: Any, how: str, use_uvloop: bool) -> None:
    with SyncSMTPPool(host="127.0.0.1", port=server.port, ignore_tls=True,
                      max_connections=1, use_uvloop=use_uvloop) as pool:
        assert pool.send(b"Subject: p1\r\n\r\nparent 1\r\n", ENV).response.code == 250
        assert _run_child(how, pool) == "250"
        # The parent's pool goes on, on the same session: the child wrote nothing on it
        # (no QUIT) and closing its copy of the socket did not end it.
        assert pool.send(b"Subject: p2\r\n\r\nparent 2\r\n", ENV).response.code == 250
    peers = {content.split(b"\r\n\r\n")[1]: peer for peer, content in server.handler.messages}
    assert set(peers) == {b"parent 1\r\n", b"child\r\n", b"parent 2\r\n"}
    assert peers[b"parent 1\r\n"] == peers[b"parent 2\r\n"]
    assert peers[b"child\r\n"] != peers[b"parent 1\r\n"]  # a fresh connection


def _runner(use_uvloop: bool) -> asyncio.Runner:
    return asyncio.Runner(loop_factory=uvloop.new_event_loop if use_uvloop else None)


@pytest.mark.parametrize("use_uvloop", LOOPS, ids=LOOP_IDS)
def test_module_level_pool_used_by_a_loop_per_run(server: Any, use_uvloop: bool,
                                                  capfd: pytest.CaptureFixture[str]) -> None:
    pool = SMTPPool(host="127.0.0.1", port=server.port, ignore_tls=True, max_connections=2)

    async def send(text: bytes) -> int:
        return (await pool.send(b"Subject: x\r\n\r\n" + text + b"\r\n", ENV)).response.code

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for n in range(3):  # a new loop each time, the old one closed
            with _runner(use_uvloop) as runner:
                assert runner.run(send(b"run %d" % n)) == 250
        with _runner(use_uvloop) as runner:
            runner.run(pool.close())
        import gc

        gc.collect()
    out, err = capfd.readouterr()
    for text in ("Event loop is closed", "never awaited", "attached to a different loop"):
        assert text not in out + err
        assert not [w for w in caught if text in str(w.message)]
    assert len(server.handler.messages) == 3


@pytest.mark.parametrize("use_uvloop", LOOPS, ids=LOOP_IDS)
def test_pool_used_from_a_second_running_loop_is_a_clear_error(server: Any,
                                                               use_uvloop: bool) -> None:
    pool = SMTPPool(host="127.0.0.1", port=server.port, ignore_tls=True)
    other = uvloop.new_event_loop() if use_uvloop else asyncio.new_event_loop()
    thread = threading.Thread(target=other.run_forever, daemon=True)
    thread.start()
    try:
        sent = asyncio.run_coroutine_threadsafe(pool.send(b"Subject: a\r\n\r\na\r\n", ENV),
                                                other)
        assert sent.result(CHILD_LIMIT).response.code == 250
        with _runner(use_uvloop) as runner, pytest.raises(RuntimeError,
                                                          match="one pool per loop") as info:
            runner.run(pool.send(b"Subject: b\r\n\r\nb\r\n", ENV))
        assert "SyncSMTPPool" in str(info.value)
        asyncio.run_coroutine_threadsafe(pool.close(), other).result(CHILD_LIMIT)
    finally:
        other.call_soon_threadsafe(other.stop)
        thread.join()
        other.close()
    assert len(server.handler.messages) == 1
