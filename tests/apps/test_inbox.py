"""``fastsmtp serve --web PORT``: the dev inbox's JSON API, the command line, and the page
in a real headless Chromium.

Messages always arrive through smtplib over 127.0.0.1; the API is read with aiohttp's
client; the page runs in Chromium driven over the DevTools protocol (``support.browser``).
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import smtplib
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from support.env import child_env
from support.server import WAIT, serve

from fastsmtp.cli.main import build_parser
from fastsmtp.handlers import Maildir, Printing

aiohttp = pytest.importorskip("aiohttp")

from fastsmtp.cli.inbox.app import WebInbox  # noqa: E402 - needs aiohttp
from fastsmtp.cli.inbox.store import MessageStore, inbox_handler  # noqa: E402

#: The hostile parts: each would change the title if the page let it run.
HOSTILE_SUBJECT = "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">"
HOSTILE_HTML = (
    "<html><head><title>hostile</title></head><body><p>hostile body</p>"
    "<script>document.title='pwned'; parent.document.title='pwned'</script>"
    "<img src=x onerror=\"document.title='pwned'; parent.document.title='pwned'\">"
    "</body></html>"
)
PAGE_TITLE = "fastsmtp inbox"


def message(number: int, *, html: str | None = None, subject: str | None = None) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = f"Sender {number} <sender{number}@example.com>"
    msg["To"] = f"rcpt{number}@example.org"
    msg["Subject"] = subject if subject is not None else f"message {number}"
    msg.set_content(f"text of message {number}\nsecond line\n")
    if html is not None:
        msg.add_alternative(html, subtype="html")
    return msg


def send(port: int, msg: EmailMessage | bytes, rcpts: list[str] | None = None) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=WAIT) as client:
        if isinstance(msg, bytes):
            client.sendmail("sender@example.com", rcpts or ["rcpt@example.org"], msg)
        else:
            client.send_message(msg, to_addrs=rcpts)


async def send_async(port: int, msg: EmailMessage | bytes, rcpts: list[str] | None = None) -> None:
    """smtplib blocks: run it off the loop that serves it (returns after the 250)."""
    await asyncio.to_thread(send, port, msg, rcpts)


@asynccontextmanager
async def inbox(inner: Any = None, **store_options: Any) -> AsyncIterator[tuple[int, str, MessageStore]]:
    """An SMTP server feeding a web inbox, in process; yields (SMTP port, base URL, store)."""
    store = MessageStore(**store_options)
    async with serve(inbox_handler(store, inner), max_size=100_000) as server, WebInbox(store) as web:
        yield server.port, web.url.rstrip("/"), store


async def get_json(http: Any, url: str) -> Any:
    async with http.get(url) as response:
        assert response.status == 200, await response.text()
        assert response.content_type == "application/json"
        return await response.json()


async def test_api_lists_newest_first_and_shows_each_part() -> None:
    async with inbox() as (port, base, _), aiohttp.ClientSession() as http:
        await send_async(port, message(1))
        with_html = message(2, html="<p>Hello <b>html</b></p>", subject="Grüße, message 2")
        with_html.add_attachment(b"\x00\x01\x02", maintype="application", subtype="octet-stream",
                                 filename="data.bin")
        sent = with_html.as_bytes(policy=with_html.policy.clone(linesep="\r\n"))
        await send_async(port, sent, ["a@example.org", "b@example.org"])
        await send_async(port, message(3))

        listed = await get_json(http, f"{base}/api/messages")
        assert listed["total"] == 3 and listed["max_messages"] == 500
        assert [m["id"] for m in listed["messages"]] == [3, 2, 1]
        second = listed["messages"][1]
        assert second["from"] == "Sender 2 <sender2@example.com>"
        assert second["to"] == "rcpt2@example.org"
        assert second["subject"] == "Grüße, message 2"  # RFC 2047 decoded
        assert second["mail_from"] == "sender@example.com"
        assert second["rcpt_tos"] == ["a@example.org", "b@example.org"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", second["received"])

        async with http.get(f"{base}/api/messages/2/raw") as response:
            assert response.status == 200 and response.content_type == "text/plain"
            raw = await response.read()
        # The source as received: what smtplib sent, and its size.
        assert raw == sent
        assert second["size"] == len(raw)

        detail = await get_json(http, f"{base}/api/messages/2")
        assert detail["subject"] == "Grüße, message 2"
        assert detail["text"] == "text of message 2\nsecond line\n"
        assert detail["html"] == "<p>Hello <b>html</b></p>\n"
        assert detail["attachments"] == [
            {"filename": "data.bin", "content_type": "application/octet-stream", "size": 3}
        ]
        assert ["From", "Sender 2 <sender2@example.com>"] in detail["headers"]
        assert ["Subject", "Grüße, message 2"] in detail["headers"]

        # The HTML part has its own route, sandboxed by its CSP; a message without one: 404.
        async with http.get(f"{base}/api/messages/2/html") as response:
            assert response.status == 200 and response.content_type == "text/html"
            assert response.headers["Content-Security-Policy"].startswith("sandbox;")
            assert "script-src" not in response.headers["Content-Security-Policy"]
            assert await response.text() == "<p>Hello <b>html</b></p>\n"
        async with http.get(f"{base}/api/messages/1/html") as response:
            assert response.status == 404
        async with http.get(f"{base}/api/messages/1") as response:
            assert (await response.json())["html"] is None


async def test_api_shows_malformed_messages() -> None:
    broken = [
        b"Subject: =?x-unknown?q?abc?=\r\nContent-Type: text/plain; charset=x-unknown\r\n\r\nbody\xff\r\n",
        b"Subject: \xff\xfe raw bytes\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!not base64\r\n",
        b"no header at all\r\n",
        b"Content-Type: multipart/mixed\r\n\r\n--no-boundary-declared\r\n\r\nhi\r\n",
    ]
    async with inbox() as (port, base, _), aiohttp.ClientSession() as http:
        for raw in broken:
            await send_async(port, raw)
        listed = await get_json(http, f"{base}/api/messages")
        assert [m["size"] for m in listed["messages"]] == [len(raw) for raw in reversed(broken)]
        assert listed["messages"][-1]["subject"] == "abc"
        assert listed["messages"][-2]["subject"] == "\ufffd\ufffd raw bytes"
        texts = [(await get_json(http, f"{base}/api/messages/{n}"))["text"] for n in (1, 2, 3, 4)]
        assert texts[:3] == ["body\ufffd\n", "!!!not base64", "no header at all\n"]


async def test_api_delete_and_clear() -> None:
    async with inbox() as (port, base, _), aiohttp.ClientSession() as http:
        for number in (1, 2, 3):
            await send_async(port, message(number))
        async with http.delete(f"{base}/api/messages/2") as response:
            assert response.status == 204
        assert [m["id"] for m in (await get_json(http, f"{base}/api/messages"))["messages"]] == [3, 1]
        for url in (f"{base}/api/messages/2", f"{base}/api/messages/2/raw"):
            async with http.get(url) as response:
                assert response.status == 404
                assert "no message 2" in (await response.json())["error"]
        async with http.delete(f"{base}/api/messages/2") as response:
            assert response.status == 404
        async with http.delete(f"{base}/api/messages") as response:
            assert response.status == 204
        listed = await get_json(http, f"{base}/api/messages")
        assert listed["total"] == 0 and listed["messages"] == []
        # Numbers are never reused: a link to a deleted message never shows another one.
        await send_async(port, message(4))
        assert [m["id"] for m in (await get_json(http, f"{base}/api/messages"))["messages"]] == [4]


async def test_api_keeps_only_the_newest_max_messages() -> None:
    async with inbox(max_messages=2) as (port, base, store), aiohttp.ClientSession() as http:
        for number in (1, 2, 3):
            await send_async(port, message(number))
        listed = await get_json(http, f"{base}/api/messages")
        assert listed["total"] == 2 and listed["max_messages"] == 2
        assert [m["subject"] for m in listed["messages"]] == ["message 3", "message 2"]
        async with http.get(f"{base}/api/messages/1") as response:
            assert response.status == 404
            assert "keeps the newest 2" in (await response.json())["error"]
        assert len(store) == 2
    with pytest.raises(ValueError, match="--web-max-messages must be at least 1"):
        MessageStore(0)


async def test_page_headers_and_foreign_hosts_refused() -> None:
    async with inbox() as (_, base, _store), aiohttp.ClientSession() as http:
        async with http.get(f"{base}/") as response:
            assert response.status == 200 and response.content_type == "text/html"
            csp = response.headers["Content-Security-Policy"]
            # Only the page's own script: no inline script, no eval, no other origin.
            assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "default-src 'none'" in csp
            assert "<title>fastsmtp inbox</title>" in await response.text()
        async with http.get(f"{base}/api/messages") as response:
            assert response.headers["X-Content-Type-Options"] == "nosniff"
        # A page on another site reaching 127.0.0.1 through DNS rebinding sends its own Host.
        async with http.get(f"{base}/api/messages", headers={"Host": "attacker.example:80"}) as response:
            assert response.status == 421
        async with http.get(f"{base}/api/messages", headers={"Host": f"localhost:{base.rsplit(':', 1)[1]}"}) as r:
            assert r.status == 200


async def test_event_stream_announces_each_change() -> None:
    async with inbox() as (port, base, _), aiohttp.ClientSession() as http:
        async with http.get(f"{base}/api/events") as events:
            assert events.content_type == "text/event-stream"

            async def next_event() -> str:
                while True:
                    block = (await asyncio.wait_for(events.content.readuntil(b"\n\n"), WAIT)).decode()
                    if "event: change" in block:  # skips keep-alive comments
                        return block

            assert "data: 0" in await next_event()
            await send_async(port, message(1))
            assert "data: 1" in await next_event()
            async with http.delete(f"{base}/api/messages/1") as response:
                assert response.status == 204
            assert "data: 2" in await next_event()


async def test_inbox_wraps_maildir_and_printing(tmp_maildir: str) -> None:
    # Maildir streams: the message goes to disk and to the inbox, both before the 250.
    async with inbox(Maildir(tmp_maildir)) as (port, base, store), aiohttp.ClientSession() as http:
        await send_async(port, message(1))
        assert len(list(Path(tmp_maildir, "new").iterdir())) == 1
        assert [m["subject"] for m in (await get_json(http, f"{base}/api/messages"))["messages"]] == ["message 1"]
        # Refused (too big): neither the Maildir nor the inbox keeps any of it.
        too_big = message(2)
        too_big.set_content("x" * 200_000)
        with pytest.raises(smtplib.SMTPException):
            await send_async(port, too_big)
        assert len(store) == 1
        assert list(Path(tmp_maildir, "tmp").iterdir()) == []
    import io

    out = io.StringIO()
    async with inbox(Printing(out)) as (port, base, store):
        await send_async(port, message(3))
        assert "Subject: message 3" in out.getvalue()
        assert [m.subject for m in store] == ["message 3"]


# ---------------------------------------------------------------------------- command line


@contextmanager
def serve_cli(*args: str, cwd: Path) -> Iterator[tuple[subprocess.Popen[str], int, int, str]]:
    """``fastsmtp serve --port 0 ARGS`` as a child; yields (process, SMTP port, web port,
    what it printed up to its listening line).

    The web line comes before the listening line: once that is read, both ports are bound.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastsmtp", "serve", "--port", "0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(), cwd=cwd,
    )
    assert proc.stderr is not None
    web = smtp = None
    lines = []
    for _ in range(20):
        line = proc.stderr.readline()
        lines.append(line)
        if not line:
            break
        found = re.search(r"web inbox on http://127\.0\.0\.1:(\d+)/", line)
        if found:
            web = int(found.group(1))
        found = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        if found:
            smtp = int(found.group(1))
            break
    try:
        if web is None or smtp is None:
            proc.kill()
            raise AssertionError(f"no port lines: {lines} {proc.communicate(timeout=WAIT)}")
        yield proc, smtp, web, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=WAIT)


def stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, err
    return out, err


async def test_cli_web_alone_keeps_messages_in_memory(tmp_path: Path) -> None:
    with serve_cli("--web", "0", "--web-max-messages", "5", cwd=tmp_path) as (proc, smtp, web, said):
        await send_async(smtp, message(1))
        async with aiohttp.ClientSession() as http:
            listed = await get_json(http, f"http://127.0.0.1:{web}/api/messages")
        assert [m["subject"] for m in listed["messages"]] == ["message 1"]
        assert listed["max_messages"] == 5
        stop(proc)
    assert "delivering to the web inbox (in memory only)" in said
    assert "(keeps the newest 5 messages)" in said
    assert list(tmp_path.iterdir()) == []  # no Maildir created


async def test_cli_web_with_maildir_and_with_print(tmp_path: Path) -> None:
    maildir = tmp_path / "mail"
    with serve_cli("--web", "0", "--maildir", str(maildir), cwd=tmp_path) as (proc, smtp, web, said):
        await send_async(smtp, message(1))
        async with aiohttp.ClientSession() as http:
            listed = await get_json(http, f"http://127.0.0.1:{web}/api/messages")
        assert [m["subject"] for m in listed["messages"]] == ["message 1"]
        assert len(list((maildir / "new").iterdir())) == 1
        stop(proc)
    assert f"delivering to {maildir} and the web inbox" in said
    with serve_cli("--print", "--web", "0", cwd=tmp_path) as (proc, smtp, web, _):
        await send_async(smtp, message(2))
        async with aiohttp.ClientSession() as http:
            listed = await get_json(http, f"http://127.0.0.1:{web}/api/messages")
        assert [m["subject"] for m in listed["messages"]] == ["message 2"]
        out, _ = stop(proc)
    assert "Subject: message 2" in out


def test_cli_web_flags_errors(tmp_path: Path) -> None:
    # Without aiohttp (a None entry in sys.modules makes its import fail), --web says what to install.
    program = (
        "import sys; sys.modules['aiohttp'] = None; from fastsmtp.cli.main import main; "
        "raise SystemExit(main(['serve', '--port', '0', '--web', '0', '--maildir', 'mail']))"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          env=child_env(), cwd=tmp_path, timeout=WAIT)
    assert done.returncode == 2
    assert 'pip install "aiofastsmtp[web]"' in done.stderr and "--web needs aiohttp" in done.stderr
    assert list(tmp_path.iterdir()) == []  # it failed before creating the Maildir
    for argv, expected in [
        (["--web-max-messages", "3"], "--web-max-messages needs --web PORT"),
        (["--web", "0", "--web-max-messages", "0"], "--web-max-messages must be at least 1"),
    ]:
        done = subprocess.run([sys.executable, "-m", "fastsmtp", "serve", "--port", "0", *argv],
                              capture_output=True, text=True, env=child_env(), cwd=tmp_path, timeout=WAIT)
        assert done.returncode != 0 and expected in done.stderr, done.stderr
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--web", "70000"])
    args = build_parser().parse_args(["serve", "--web", "8025"])
    assert args.web == 8025 and args.maildir is None and not args.print_


# ---------------------------------------------------------------------------- the page in Chromium

WAIT_ROWS = """new Promise((resolve) => {
  const done = () => document.querySelectorAll('#rows tr').length === %d;
  if (done()) return resolve(true);
  const on = () => { if (done()) { document.removeEventListener('inbox:rendered', on); resolve(true); } };
  document.addEventListener('inbox:rendered', on);
})"""

ROWS = "[...document.querySelectorAll('#rows tr')].map((tr) => [...tr.cells].map((td) => td.textContent))"

OPEN = """(() => {
  const opened = new Promise((r) => document.addEventListener('inbox:opened', (e) => r(e.detail), {once: true}));
  [...document.querySelectorAll('#rows tr')].find((tr) => tr.cells[2].textContent === %s).click();
  return opened;
})()"""

TAB = """(() => {
  const shown = new Promise((r) => document.addEventListener('inbox:tab', (e) => r(e.detail), {once: true}));
  document.querySelector('#tabs [data-tab=%s]').click();
  return shown;
})()"""

HTML_TAB = """(() => {
  document.querySelector('#tabs [data-tab=html]').click();
  const frame = document.querySelector('#v-body iframe');
  return new Promise((r) => frame.addEventListener('load', () => r(frame.getAttribute('sandbox')), {once: true}));
})()"""


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", "not a PNG"
    return struct.unpack(">II", data[16:24])


async def test_page_in_chromium_lists_shows_updates_and_runs_no_message_script(tmp_path: Path) -> None:
    from support.browser import chromium, require_chromium

    require_chromium()
    with serve_cli("--web", "0", cwd=tmp_path) as (proc, smtp, web, _):
        base = f"http://127.0.0.1:{web}"
        await send_async(smtp, message(1))
        await send_async(smtp, message(2, html="<h1>Hello from HTML</h1><p>second <b>message</b></p>"))
        await send_async(smtp, message(3))
        async with chromium() as browser:
            page = await browser.new_page()
            await page.goto(f"{base}/")
            assert await page.evaluate(WAIT_ROWS % 3)
            rows = await page.evaluate(ROWS)
            # Newest first: from (the name, then the address), to, subject, time, size.
            assert [row[:3] for row in rows] == [
                [f"Sender {n}sender{n}@example.com", f"rcpt{n}@example.org", f"message {n}"] for n in (3, 2, 1)
            ]
            assert await page.evaluate("document.querySelector('#rows td.from').title") == (
                "Sender 3 <sender3@example.com>"
            )
            async with aiohttp.ClientSession() as http:
                listed = await get_json(http, f"{base}/api/messages")
            assert [row[4] for row in rows] == [f"{m['size']} B" for m in listed["messages"]]
            assert all(re.search(r"\d:\d\d", row[3]) for row in rows)
            assert await page.evaluate("document.title") == PAGE_TITLE
            assert png_size(await page.screenshot(tmp_path / "list.png")) == (1280, 860)

            # One message's view: text, headers, raw source, HTML.
            assert await page.evaluate(OPEN % json.dumps("message 2")) == 2
            assert await page.evaluate("document.getElementById('v-subject').textContent") == "message 2"
            meta = await page.evaluate("document.getElementById('v-meta').textContent")
            assert "Sender 2 <sender2@example.com>" in meta and "rcpt2@example.org" in meta
            assert await page.evaluate("document.querySelector('#v-body pre').textContent") == (
                "text of message 2\nsecond line\n"
            )
            assert await page.evaluate(TAB % "headers") == "headers"
            assert "Subjectmessage 2" in await page.evaluate("document.querySelector('#v-body table').textContent")
            assert await page.evaluate(TAB % "raw") == "raw"
            raw = await page.evaluate("document.querySelector('#v-body pre').textContent")
            assert "Subject: message 2\r\n" in raw and "<h1>Hello from HTML</h1>" in raw
            assert await page.evaluate(HTML_TAB) == ""  # sandbox="" (no allow-scripts)
            html_url = f"{base}/api/messages/2/html"
            assert await page.evaluate_in_frame(html_url, "document.body.textContent") == "Hello from HTMLsecond message\n"
            shot = await page.screenshot(tmp_path / "message.png")
            assert png_size(shot) == (1280, 860) and shot.stat().st_size > 10_000

            # A hostile message arrives while the page is open: the list updates live...
            await send_async(smtp, message(4, html=HOSTILE_HTML, subject=HOSTILE_SUBJECT))
            assert await page.evaluate(WAIT_ROWS % 4)
            rows = await page.evaluate(ROWS)
            # ... showing the subject as text: no element was made of it, nothing ran.
            assert rows[0][2] == HOSTILE_SUBJECT
            assert await page.evaluate("document.querySelectorAll('#rows script, #rows img').length") == 0
            assert await page.evaluate("document.title") == PAGE_TITLE
            await page.screenshot(tmp_path / "hostile-list.png")

            # Its view: subject as text, the HTML part in the sandbox, where nothing runs.
            assert await page.evaluate(OPEN % json.dumps(HOSTILE_SUBJECT)) == 4
            assert await page.evaluate("document.getElementById('v-subject').textContent") == HOSTILE_SUBJECT
            assert await page.evaluate(HTML_TAB) == ""
            hostile_url = f"{base}/api/messages/4/html"
            # The script is in the frame's DOM (the HTML was not stripped) but never ran.
            assert await page.evaluate_in_frame(hostile_url, "document.querySelectorAll('script').length") == 1
            assert await page.evaluate_in_frame(hostile_url, "document.title") == "hostile"
            assert await page.evaluate("document.title") == PAGE_TITLE
            assert await page.evaluate("document.querySelectorAll('#view script, #view img').length") == 0
            await page.screenshot(tmp_path / "hostile-message.png")

            # Delete (the open message) and Delete all, from the page.
            await page.evaluate("document.getElementById('delete').click()")
            assert await page.evaluate(WAIT_ROWS % 3)
            assert await page.evaluate("document.getElementById('view').hidden") is True
            await page.evaluate("document.getElementById('clear').click()")
            assert await page.evaluate(WAIT_ROWS % 0)
            assert await page.evaluate("document.getElementById('empty').hidden") is False
            async with aiohttp.ClientSession() as http:
                assert (await get_json(http, f"{base}/api/messages"))["total"] == 0

            # The control: the same HTML outside the sandbox does change the title, so the
            # checks above would have seen it run.
            control = tmp_path / "control.html"
            control.write_text(HOSTILE_HTML)
            await page.goto(control.as_uri())
            assert await page.evaluate("document.title") == "pwned"

            # The page's event stream is still open: the server stops promptly anyway.
            await page.goto(f"{base}/")
            assert await page.evaluate("new Promise((r) => { const b = document.getElementById('live'); "
                                       "const f = () => b.textContent === 'live' ? r(true) : setTimeout(f, 20); f(); })")
            stop(proc)
