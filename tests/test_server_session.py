"""The sans-IO server session alone: lines in, replies and hook calls out."""

from __future__ import annotations

from typing import Any

from fastsmtp._codec import ServerReader, core
from fastsmtp._session import ACT_CLOSE, ACT_DATA, HookCall, ServerConfig, ServerSession, encode_reply


def drive(sm: ServerSession, reader: ServerReader, data: bytes) -> list[Any]:
    """Feed ``data`` through a reader into the session; collect what comes out."""
    reader.feed(data)
    out: list[Any] = []
    while True:
        in_data = reader.in_data
        item = reader.next_data() if in_data else reader.next_line()
        if item is None:
            return out
        r = sm.data_received(*item) if in_data else sm.receive_line(*item)
        if r is not None:
            out.append(r)
        if sm.action == ACT_DATA:
            reader.start_data(sm.config.max_size)
        sm.action = 0


def test_no_hooks_gives_precomputed_replies() -> None:
    sm = ServerSession(ServerConfig(object(), name="s.example"))
    out = drive(sm, ServerReader(), b"HELO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nx\r\n.\r\n")
    assert out == [
        b"250 s.example\r\n",
        b"250 2.1.0 OK\r\n",
        b"250 2.1.5 OK\r\n",
        b"354 End data with <CR><LF>.<CR><LF>\r\n",
        b"250 2.0.0 OK: message accepted\r\n",
    ]


def test_hook_calls_chain_and_failures() -> None:
    class H:
        def handle_RCPT(self, *args: Any) -> str:
            return "250 fine"

    sm = ServerSession(ServerConfig(H(), name="s"))
    drive(sm, ServerReader(), b"EHLO c\r\nMAIL FROM:<a@b>\r\n")
    call = sm.receive_line(core.LINE_OK, b"RCPT TO:<x@y>")
    assert isinstance(call, HookCall) and call.name == "handle_RCPT" and call.server_arg
    assert call.args[2:] == ("x@y", [])
    assert call.fail() == b"451 4.3.0 Error: local error in processing\r\n"
    assert call.finish("250 fine") == b"250 fine\r\n"
    assert sm.receive_line(core.LINE_OK, b"DATA") == b"354 End data with <CR><LF>.<CR><LF>\r\n"


def test_reply_encoding_refuses_injection() -> None:
    assert encode_reply("250 a\n250 b") == b"250 a\r\n250 b\r\n"
    assert encode_reply("250 ok\r\nMAIL FROM:<x>") is None
    assert encode_reply("hello") is None
    assert encode_reply(42) is None


def test_runaway_line_closes() -> None:
    sm = ServerSession(ServerConfig(object(), name="s"))
    assert sm.receive_line(core.LINE_RUNAWAY, b"").startswith(b"421 4.7.0 s ")
    assert sm.action == ACT_CLOSE
