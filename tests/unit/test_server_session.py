"""The sans-IO server session alone: lines in, replies and hook calls out."""

from __future__ import annotations

from typing import Any

from fastsmtp._codec import ServerReader, core
from fastsmtp.server.config import ServerConfig
from fastsmtp.server.replies import encode_reply
from fastsmtp.server.session import (
    ACT_CLOSE,
    ACT_DATA,
    Action,
    HookCall,
    ServerSession,
)


def drive(sm: ServerSession, reader: ServerReader, data: bytes) -> list[Any]:
    """Feed ``data`` through a reader into the session; collect the replies it returns."""
    reader.feed(data)
    out: list[Any] = []
    while True:
        in_data = reader.in_data
        item = reader.next_data() if in_data else reader.next_line()
        if item is None:
            return out
        r = sm.data_received(*item) if in_data else sm.receive_line(*item)
        if isinstance(r, Action):
            if r.kind == ACT_DATA:
                reader.start_data(sm.config.max_size)
            r = r.reply
        if r is not None:
            out.append(r)


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
    action = sm.receive_line(core.LINE_OK, b"DATA")
    assert isinstance(action, Action) and action.kind == ACT_DATA
    assert action.reply == b"354 End data with <CR><LF>.<CR><LF>\r\n"


def test_reply_encoding_refuses_injection() -> None:
    assert encode_reply("250 ok\r\nMAIL FROM:<x>") is None
    assert encode_reply("hello") is None
    assert encode_reply(42) is None


def test_reply_encoding_always_gives_one_reply() -> None:
    # A handler's separators are rewritten: only the last line ends the reply.
    assert encode_reply("250 OK\n250 injected") == b"250-OK\r\n250 injected\r\n"
    assert encode_reply("250 a\r\n250 b\r250 c\n") == b"250-a\r\n250-b\r\n250 c\r\n"
    assert encode_reply("250-a\n250-b") == b"250-a\r\n250 b\r\n"
    assert encode_reply(b"250-a\r\n250") == b"250-a\r\n250\r\n"
    assert encode_reply("550 5.1.1 \u00fcser unknown") == "550 5.1.1 \u00fcser unknown\r\n".encode()
    # Lines that disagree on the code are several replies: refused.
    assert encode_reply("250-a\n550 b") is None
    assert encode_reply("250 a\n251 b") is None
    # Control characters other than the line breaks: refused.
    for bad in ("250 a\x00b", "250 \x1b[31mred", "250 a\tb", "250 a\x7f", "250 a\x85b", "250 a\n\n250 b"):
        assert encode_reply(bad) is None, repr(bad)


def test_runaway_line_closes() -> None:
    sm = ServerSession(ServerConfig(object(), name="s"))
    action = sm.receive_line(core.LINE_RUNAWAY, b"")
    assert isinstance(action, Action) and action.kind == ACT_CLOSE
    assert action.reply.startswith(b"421 4.7.0 s ")


def test_name_and_banner_are_checked_for_control_characters() -> None:
    for options in (
        {"banner": "hi\r\n250 fake\nx"},
        {"banner": "ready\x00"},
        {"banner": "\x1b[2J"},
        {"name": "mx\nexample"},
        {"name": "mx\texample"},
        {"name": "mx example"},
        {"name": ""},
    ):
        name = options.pop("name", "s.example")
        try:
            ServerConfig(object(), name=name, **options)
        except ValueError:
            continue
        raise AssertionError(f"accepted name={name!r} {options!r}")
    config = ServerConfig(object(), name="s.example", banner="ESMTP ready - \u00e9t\u00e9")
    assert config.greeting == "220 s.example ESMTP ready - \u00e9t\u00e9\r\n".encode()


def test_loggable_masks_auth_data() -> None:
    sm = ServerSession(ServerConfig(object(), name="s", enable_auth=True, auth_require_tls=False))
    drive(sm, ServerReader(), b"EHLO c\r\n")
    assert sm.loggable(b"MAIL FROM:<a@b>") == b"MAIL FROM:<a@b>"
    assert sm.loggable(b"auth plain AGFAYgBj") == b"auth plain <hidden>"
    assert sm.loggable(b"AUTH\tc2VjcmV0") == b"AUTH <hidden>"  # not a mechanism: could be the secret
    assert sm.loggable(b"AUTH LOGIN") == b"AUTH LOGIN"
    assert sm.receive_line(core.LINE_OK, b"AUTH LOGIN") == b"334 VXNlcm5hbWU6\r\n"
    assert sm.loggable(b"YWxpY2U=") == b"<hidden>"  # a SASL response


def test_bdat_returns_chunk_actions_sans_io() -> None:
    from fastsmtp.server.session import ACT_CHUNK, ChunkAction

    sm = ServerSession(ServerConfig(object(), name="s.example", max_size=100))
    reader = ServerReader()
    assert drive(sm, reader, b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n")[1:] == [
        b"250 2.1.0 OK\r\n", b"250 2.1.5 OK\r\n",
    ]
    first = sm.receive_line(core.LINE_OK, b"BDAT 3")
    assert isinstance(first, ChunkAction) and first.kind == ACT_CHUNK and first.reply == b""
    assert (first.size, first.max_size, first.first) == (3, 100, True)
    reader.start_chunk(first.size, first.max_size, first.first)
    reader.feed(b"a.\n")
    assert sm.chunk_received(*reader.next_data()) == b"250 2.0.0 OK: 3 octets received\r\n"
    last = sm.receive_line(core.LINE_OK, b"bdat 0 last")
    assert isinstance(last, ChunkAction) and (last.size, last.first) == (0, False)
    reader.start_chunk(last.size, last.max_size, last.first)
    assert sm.chunk_received(*reader.next_data()) == b"250 2.0.0 OK: message accepted\r\n"
    assert not sm.in_transaction
    # A refused chunk is still framed (its octets dropped whatever max_size says).
    refused = sm.receive_line(core.LINE_OK, b"BDAT 500 LAST")
    assert isinstance(refused, ChunkAction) and (refused.size, refused.max_size) == (500, 0)
    reader.start_chunk(refused.size, refused.max_size, refused.first)
    reader.feed(b"x" * 500)
    assert sm.chunk_received(*reader.next_data()) == b"503 5.5.1 Error: need MAIL command\r\n"
    closing = sm.receive_line(core.LINE_OK, b"BDAT 1x")
    assert isinstance(closing, Action) and closing.kind == ACT_CLOSE
