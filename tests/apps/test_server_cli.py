"""Built-in handlers (Maildir, Printing, Sink) and ``fastsmtp serve`` as a subprocess."""

from __future__ import annotations

import io
import re
import signal
import smtplib
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support.env import child_env
from support.server import WAIT, greeted, serve, wait_until

from fastsmtp.cli.main import build_parser
from fastsmtp.cli.serve import load_users
from fastsmtp.handlers import Maildir, Printing, Sink


def maildir_files(path: str, sub: str) -> list[Path]:
    return sorted(Path(path, sub).iterdir())


async def test_maildir_handler_delivers_before_250_and_cleans_refused(tmp_maildir: str) -> None:
    handler = Maildir(tmp_maildir)
    async with serve(handler, max_size=1000) as server:
        client = await greeted(server.port)
        await client.command(b"EHLO me")
        await client.send(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\nSubject: m\r\n\r\n..hi\r\n.\r\n")
        replies = [await client.reply() for _ in range(4)]
        assert replies[-1].startswith(b"250 2.0.0 OK: queued as M")
        # The 250 came after the rename: the file is already in new/.
        files = maildir_files(tmp_maildir, "new")
        assert len(files) == 1
        assert files[0].read_bytes() == b"Return-Path: <a@x>\r\nDelivered-To: b@y\r\nSubject: m\r\n\r\n.hi\r\n"
        # Too big: drained, 552, and the partial file is gone from tmp/.
        await client.send(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n" + b"z" * 998 + b"\r\n" * 3 + b".\r\n")
        replies = [await client.reply() for _ in range(4)]
        assert replies[-1].startswith(b"552 5.3.4")
        # A client that leaves mid-message leaves nothing behind either.
        await client.send(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\npartial")
        replies = [await client.reply() for _ in range(3)]
        await client.close()
        await wait_until(lambda: server.connections == 0)
    assert len(maildir_files(tmp_maildir, "new")) == 1
    assert maildir_files(tmp_maildir, "tmp") == []


async def test_printing_and_sink_handlers() -> None:
    out = io.StringIO()
    async with serve(Printing(out)) as server:
        client = await greeted(server.port)
        await client.send(b"HELO me\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\nSubject: p\r\n\r\nbody\r\n.\r\n")
        replies = [await client.reply() for _ in range(5)]
        assert replies[-1] == b"250 2.0.0 OK\r\n"
        await client.close()
    text = out.getvalue()
    assert "X-MailFrom: a@x\nX-RcptTo: b@y\nSubject: p\n\nbody\n" in text
    async with serve(Sink()) as server:
        client = await greeted(server.port)
        await client.send(b"HELO me\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\nx\r\n.\r\n")
        replies = [await client.reply() for _ in range(5)]
        assert replies[-1] == b"250 2.0.0 OK: message accepted\r\n"
        await client.close()


def test_users_file_and_parser(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text("# comment\nalice:pa:ss\n\nbob:x\n")
    assert load_users(str(users)) == {"alice": "pa:ss", "bob": "x"}
    users.write_text("nocolon\n")
    with pytest.raises(ValueError):
        load_users(str(users))
    args = build_parser().parse_args(["serve", "--port", "0", "--print"])
    assert args.command == "serve" and args.print_ and args.host == "127.0.0.1"


def start_cli(*args: str) -> tuple[subprocess.Popen[str], int]:
    env = child_env()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastsmtp", "serve", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stderr is not None
    for _ in range(20):  # with -vv other DEBUG lines may come first
        line = proc.stderr.readline()
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        if match is not None or not line:
            break
    if match is None:
        proc.kill()
        raise AssertionError(f"no listening line: {line!r} {proc.communicate(timeout=WAIT)}")
    return proc, int(match.group(1))


def test_cli_serve_maildir_survives_kill(tmp_path: Path, tls_cert: Any, client_ssl_context: Any) -> None:
    maildir = str(tmp_path / "Maildir")
    users = tmp_path / "users"
    users.write_text("alice:wonderland\n")
    cert = tmp_path / "cert.pem"
    key = tmp_path / "key.pem"
    tls_cert.private_key_and_cert_chain_pem.write_to_path(str(cert))
    tls_cert.private_key_pem.write_to_path(str(key))
    proc, port = start_cli(
        "--maildir", maildir, "--users", str(users), "--tls-cert", str(cert), "--tls-key", str(key)
    )
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=WAIT) as client:
            client.starttls(context=client_ssl_context)
            with pytest.raises(smtplib.SMTPSenderRefused):
                client.sendmail("a@x", ["b@y"], b"Subject: no auth\r\n\r\nx\r\n")
            client.login("alice", "wonderland")
            client.sendmail("a@x", ["b@y"], b"Subject: cli\r\n\r\nstored\r\n")
    finally:
        proc.kill()  # no graceful shutdown: what was accepted must already be on disk
        proc.communicate(timeout=WAIT)
    files = maildir_files(maildir, "new")
    assert len(files) == 1
    assert files[0].read_bytes().endswith(b"Subject: cli\r\n\r\nstored\r\n")


def test_cli_serve_print_and_sigterm() -> None:
    proc, port = start_cli("--print")
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=WAIT) as client:
            client.sendmail("a@x", ["b@y"], b"Subject: printed\r\n\r\nhello\r\n")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, err
    assert "Subject: printed\n\nhello\n" in out
    assert "shutting down" in err


def test_cli_refuses_users_without_tls(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text("a:b\n")
    env = child_env()
    done = subprocess.run(
        [sys.executable, "-m", "fastsmtp", "serve", "--port", "0", "--users", str(users)],
        capture_output=True, text=True, env=env, timeout=WAIT,
    )
    assert done.returncode == 2
    assert "--users needs --tls-cert" in done.stderr


def test_cli_serve_vv_logs_the_traffic() -> None:
    proc, port = start_cli("--print", "-vv")
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=WAIT) as client:
            client.sendmail("a@x", ["b@y"], b"Subject: logged\r\n\r\nhello\r\n")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=WAIT)
    assert ">> b'mail FROM:<a@x> size=" in err  # smtplib's spelling
    assert "<< b'250 2.1.0 OK\\r\\n'" in err
