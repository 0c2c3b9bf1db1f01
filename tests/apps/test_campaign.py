"""``fastsmtp send``: end to end as a subprocess over loopback, plus the journal and template units.

Servers are :class:`fastsmtp.server.SMTPServerThread` on 127.0.0.1, port 0, with a
recording handler; every subprocess runs with a timeout and is reaped.
"""

from __future__ import annotations

import asyncio
import csv
import email
import email.policy
import io
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.env import child_env
from support.ports import refused_port

from fastsmtp._syntax import mailbox_error
from fastsmtp.cli.campaign import (
    CampaignInputError,
    FieldTemplate,
    Journal,
    MessageTemplate,
    classify,
    read_recipients,
    should_send,
    validate_recipients,
)
from fastsmtp.cli.progress import Progress
from fastsmtp.cli.serve import UsersAuthenticator
from fastsmtp.connection import SendResult
from fastsmtp.errors import (
    SMTPConnectionError,
    SMTPInvalidEnvelope,
    SMTPMaybeDelivered,
    SMTPPoolClosed,
    SMTPProtocolError,
    SMTPRecipientsRefused,
    SMTPResponseError,
)
from fastsmtp.reply import Reply
from fastsmtp.server import SMTPServerThread

RUN_TIMEOUT = 90.0  # seconds one `fastsmtp send` subprocess may take at most
SENDER = "news@example.net"


# -- helpers ---------------------------------------------------------------------------------


def env_for(**extra: str) -> dict[str, str]:
    env = child_env()
    env.pop("FASTSMTP_PASSWORD", None)
    env.update(extra)
    return env


def send_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "fastsmtp", "send", *args]


def run_send(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(send_cmd(*args), cwd=cwd, env=env_for(**env), capture_output=True,
                          text=True, timeout=RUN_TIMEOUT, stdin=subprocess.DEVNULL)


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def read_results(path: Path) -> dict[str, dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as fh:
        return {row["email"]: row for row in csv.DictReader(fh)}


class Recorder:
    """A handler that records every accepted message; refuses chosen recipients.

    Attributes:
        messages: ``(recipient, content)`` per accepted message, in arrival order.
        mails: MAIL commands seen (0 proves nothing was attempted).
    """

    def __init__(self, refuse: dict[str, str] | None = None, delay: float = 0.0) -> None:
        self.refuse = refuse or {}
        self.delay = delay
        self.messages: list[tuple[str, bytes]] = []
        self.mails = 0
        self.lock = threading.Lock()

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:
        with self.lock:
            self.mails += 1
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.messages.append((rcpt, envelope.content))
        return "250 2.0.0 Ok: stored"

    def count(self) -> int:
        with self.lock:
            return len(self.messages)

    def recipients(self) -> Counter[str]:
        with self.lock:
            return Counter(r for r, _ in self.messages)


@pytest.fixture
def recorder_server() -> Iterator[tuple[Recorder, SMTPServerThread]]:
    recorder = Recorder()
    thread = SMTPServerThread(recorder, "127.0.0.1", 0)
    thread.start()
    try:
        yield recorder, thread
    finally:
        thread.stop()


def server_url(thread: SMTPServerThread, query: str = "") -> str:
    return f"smtp://127.0.0.1:{thread.port}/{'?' + query if query else ''}"


def wait_for(predicate: Any, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def people(n: int) -> list[list[str]]:
    return [[f"user{i}@example.com", f"User{i}"] for i in range(n)]


# -- (a) the embedded Maildir default --------------------------------------------------------


def test_embedded_maildir_default_substitutes_everything(tmp_path: Path) -> None:
    write_csv(tmp_path / "list.csv", ["email", "first_name", "city"], [
        ["alice@example.com", "Alice", "Paris"],
        ["bob@example.org", "José", "Zürich"],
        ["carol@example.com", "Carol", "a {city} of braces"],
        ["ALICE@example.com", "Again", "x"],  # the same address: sent once
    ])
    proc = run_send(tmp_path, "list.csv", "--from", SENDER, "--subject", "Hello {first_name}",
                    "--text", "Dear {first_name},\n.greetings from {city}\n{{first_name}} is literal\n",
                    "--html", "<style>p { color: red }</style><p>Hi {first_name}</p>")
    assert proc.returncode == 0, proc.stderr
    assert "fastsmtp-outbox" in proc.stderr and "nothing left this machine" in proc.stderr
    assert "1 duplicate line(s) skipped" in proc.stderr
    files = sorted((tmp_path / "fastsmtp-outbox" / "new").iterdir())
    assert len(files) == 3
    by_rcpt = {}
    for path in files:
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        by_rcpt[msg["Delivered-To"]] = msg
    assert set(by_rcpt) == {"alice@example.com", "bob@example.org", "carol@example.com"}
    bob = by_rcpt["bob@example.org"]
    assert bob["Subject"] == "Hello José"
    assert bob["From"] == SENDER and bob["To"] == "bob@example.org"
    assert bob["Message-ID"] and bob["Date"]
    text = bob.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert text == "Dear José,\n.greetings from Zürich\n{first_name} is literal\n"
    html = bob.get_body(("html",)).get_content()
    assert html.strip() == "<style>p { color: red }</style><p>Hi José</p>"
    # A value is substituted once: braces inside a value are not placeholders.
    carol = by_rcpt["carol@example.com"].get_body(("plain",)).get_content()
    assert "greetings from a {city} of braces" in carol
    ids = {m["Message-ID"] for m in by_rcpt.values()}
    assert len(ids) == 3  # a new Message-ID per message
    results = read_results(tmp_path / "list.preview-results.csv")
    assert list(results) == ["alice@example.com", "bob@example.org", "carol@example.com"]
    assert all(r["status"] == "accepted" and r["code"] == "250" for r in results.values())
    assert (tmp_path / "list.preview-results.journal.sqlite").exists()


def test_eml_template_keeps_attachments_and_drops_bcc(tmp_path: Path) -> None:
    template = email.message.EmailMessage()
    template["Subject"] = "Invoice for {name}"
    template["To"] = "{name} <{email}>"
    template["Bcc"] = "secret@example.com"
    template.set_content("Hello {name}, your total is {total}.\n")
    template.add_attachment(b"\x00\x01binary{name}", maintype="application",
                            subtype="octet-stream", filename="a.bin")
    (tmp_path / "t.eml").write_bytes(bytes(template))
    write_csv(tmp_path / "r.csv", ["email", "name", "total"], [["zoe@example.com", "Zoé", "12 €"]])
    proc = run_send(tmp_path, "r.csv", "--from", SENDER, "--template", "t.eml",
                    "--maildir", "box", "--results", "out.csv")
    assert proc.returncode == 0, proc.stderr
    [path] = list((tmp_path / "box" / "new").iterdir())
    raw = path.read_bytes()
    assert b"secret@example.com" not in raw and b"Bcc" not in raw
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["Subject"] == "Invoice for Zoé"
    assert msg["To"].addresses[0].display_name == "Zoé"
    assert msg["To"].addresses[0].addr_spec == "zoe@example.com"
    assert msg.get_body(("plain",)).get_content().replace("\r\n", "\n") == "Hello Zoé, your total is 12 €.\n"
    [attachment] = list(msg.iter_attachments())
    assert attachment.get_content() == b"\x00\x01binary{name}"  # attachments are not templates
    assert read_results(tmp_path / "out.csv")["zoe@example.com"]["status"] == "accepted"
    assert (tmp_path / "out.journal.sqlite").exists()


# -- (b) a server that refuses some recipients -----------------------------------------------


def test_rejected_and_deferred_recipients_exit_1(tmp_path: Path,
                                                 recorder_server: tuple[Recorder, SMTPServerThread]) -> None:
    recorder, thread = recorder_server
    recorder.refuse = {
        "user1@example.com": "550 5.1.1 No such user here",
        "user3@example.com": "550 5.7.1 Relaying denied",
        "user4@example.com": "450 4.2.1 Mailbox busy, try later",
    }
    write_csv(tmp_path / "r.csv", ["email", "first_name"], people(6))
    proc = run_send(tmp_path, "r.csv", "--from", SENDER, "--subject", "Hi {first_name}", "--text", "x",
                    "--server", server_url(thread, "max_attempts=1"), "--connections", "2")
    assert proc.returncode == 1, proc.stderr
    results = read_results(tmp_path / "r.results.csv")
    assert [r["email"] for r in results.values()] == [f"user{i}@example.com" for i in range(6)]
    assert results["user1@example.com"]["status"] == "rejected"
    assert results["user1@example.com"]["code"] == "550"
    assert "No such user here" in results["user1@example.com"]["reply"]
    assert results["user3@example.com"]["status"] == "rejected"
    assert results["user4@example.com"]["status"] == "deferred"
    assert results["user4@example.com"]["code"] == "450"
    for i in (0, 2, 5):
        row = results[f"user{i}@example.com"]
        assert (row["status"], row["code"]) == ("accepted", "250")
        assert "Ok: stored" in row["reply"]
    assert sorted(recorder.recipients()) == [f"user{i}@example.com" for i in (0, 2, 5)]
    assert "3 accepted, 2 rejected, 1 deferred" in proc.stderr
    # The pool's final stats: the deferral (450, one attempt allowed) is a refusal too.
    assert "\n  pool: sent=3 refused=3 failed=0 maybe_delivered=0 retried=0 connections=0 " \
        in proc.stderr
    # --resume retries only the deferred one (the server now takes it), never the others.
    recorder.refuse = {}
    again = run_send(tmp_path, "r.csv", "--from", SENDER, "--subject", "Hi {first_name}", "--text", "x",
                     "--server", server_url(thread, "max_attempts=1"), "--resume")
    assert again.returncode == 1, again.stderr  # two rejections remain final
    assert recorder.recipients() == Counter(f"user{i}@example.com" for i in (0, 2, 4, 5))
    assert read_results(tmp_path / "r.results.csv")["user4@example.com"]["status"] == "accepted"


# -- (c) interrupted campaigns ---------------------------------------------------------------


SLOW_ARGS = ("--from", SENDER, "--subject", "Hi {first_name}", "--text", "Hello {first_name}",
             "--connections", "1")


def _uncertain(results: dict[str, dict[str, str]]) -> set[str]:
    return {e for e, r in results.items() if r["status"] == "maybe-delivered"}


def test_sigkill_mid_campaign_then_resume_sends_each_once(tmp_path: Path) -> None:
    n = 200
    recorder = Recorder(delay=0.02)
    everyone = {f"user{i}@example.com" for i in range(n)}
    write_csv(tmp_path / "r.csv", ["email", "first_name"], people(n))
    with SMTPServerThread(recorder, "127.0.0.1", 0) as thread:
        url = server_url(thread)
        proc = subprocess.Popen(send_cmd("r.csv", "--server", url, *SLOW_ARGS), cwd=tmp_path,
                                env=env_for(), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert wait_for(lambda: recorder.count() >= 40), "the campaign did not start"
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait(timeout=RUN_TIMEOUT)
        assert proc.returncode == -signal.SIGKILL
        assert wait_for(lambda: thread.server is not None and thread.server.connections == 0)
        first = recorder.recipients()
        assert 40 <= sum(first.values()) < n  # really interrupted mid-way
        # The journal survived the kill: every recorded 250 is one the server has.
        db = sqlite3.connect(tmp_path / "r.results.journal.sqlite")
        accepted = {e for (e,) in db.execute("SELECT email FROM recipients WHERE status='accepted'")}
        db.close()
        assert accepted <= set(first)

        resumed = run_send(tmp_path, "r.csv", "--server", url, *SLOW_ARGS, "--resume")
        results = read_results(tmp_path / "r.results.csv")
        uncertain = _uncertain(results)
        total = recorder.recipients()
        # Nobody got the message twice, and the server total equals the unique recipients.
        assert max(total.values()) == 1
        assert sum(total.values()) == len(total)
        # Everybody got it, except uncertain ones, which were not resent by default.
        assert everyone - set(total) <= uncertain
        assert not (uncertain & (set(total) - set(first)))  # none of them sent by the resume
        assert {e for e, r in results.items() if r["status"] == "accepted"} == everyone - uncertain
        assert resumed.returncode == (1 if uncertain else 0), resumed.stderr
        if uncertain:
            assert f"{len(uncertain)} uncertain" in resumed.stderr
            assert "--resend-uncertain" in resumed.stderr

        # Asked explicitly, the uncertain ones are sent; nobody else gets a second copy.
        final = run_send(tmp_path, "r.csv", "--server", url, *SLOW_ARGS, "--resume",
                         "--resend-uncertain")
        assert final.returncode == 0, final.stderr
        total = recorder.recipients()
        assert set(total) == everyone
        assert {e for e, c in total.items() if c > 1} <= uncertain
        assert all(r["status"] == "accepted" for r in read_results(tmp_path / "r.results.csv").values())


def test_sigint_stops_gracefully_then_resume_completes(tmp_path: Path) -> None:
    n = 200
    recorder = Recorder(delay=0.02)
    write_csv(tmp_path / "r.csv", ["email", "first_name"], people(n))
    with SMTPServerThread(recorder, "127.0.0.1", 0) as thread:
        url = server_url(thread)
        proc = subprocess.Popen(send_cmd("r.csv", "--server", url, *SLOW_ARGS), cwd=tmp_path,
                                env=env_for(), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            assert wait_for(lambda: recorder.count() >= 30), "the campaign did not start"
            proc.send_signal(signal.SIGINT)
            _, stderr = proc.communicate(timeout=RUN_TIMEOUT)
        finally:
            proc.kill()
            proc.wait(timeout=RUN_TIMEOUT)
        assert proc.returncode == 130, stderr
        assert "interrupted" in stderr and "--resume" in stderr
        results = read_results(tmp_path / "r.results.csv")
        assert len(results) == n
        statuses = Counter(r["status"] for r in results.values())
        # In-flight messages finished: no uncertainty after a graceful stop.
        assert set(statuses) == {"accepted", "pending"}
        assert statuses["accepted"] == recorder.count()
        resumed = run_send(tmp_path, "r.csv", "--server", url, *SLOW_ARGS, "--resume")
        assert resumed.returncode == 0, resumed.stderr
        total = recorder.recipients()
        assert len(total) == n and max(total.values()) == 1


# -- (d) bad input: nothing is sent ----------------------------------------------------------

BASIC = ("--from", SENDER, "--subject", "Hi {first_name}", "--text", "Hello {first_name}")


def test_missing_email_column(tmp_path: Path, recorder_server: tuple[Recorder, SMTPServerThread]) -> None:
    recorder, thread = recorder_server
    write_csv(tmp_path / "r.csv", ["mail", "first_name"], [["a@example.com", "A"]])
    proc = run_send(tmp_path, "r.csv", *BASIC, "--server", server_url(thread))
    assert proc.returncode == 2
    assert "no 'email' column" in proc.stderr and "mail, first_name" in proc.stderr
    assert recorder.mails == 0 and not (tmp_path / "r.results.csv").exists()


def test_invalid_addresses_all_listed_with_lines(tmp_path: Path,
                                                 recorder_server: tuple[Recorder, SMTPServerThread]) -> None:
    recorder, thread = recorder_server
    (tmp_path / "r.csv").write_text(
        "email,first_name\n"
        "good@example.com,A\n"
        "no-at-sign,B\n"
        '"multi@example.com","two\nlines are fine in a body field"\n'
        "bad@@example.com,D\n"
        "\n"
        "spaced out@example.com,E\n"
        "x@nodot,F\n"
        "good2@example.com,G\n", encoding="utf-8")
    proc = run_send(tmp_path, "r.csv", "--from", SENDER, "--subject", "Hi", "--text", "Hello {first_name}",
                    "--server", server_url(thread))
    assert proc.returncode == 2
    for line, address in ((3, "no-at-sign"), (6, "bad@@example.com"), (8, "spaced out@example.com"),
                          (9, "x@nodot")):
        assert f"line {line}: invalid address {address!r}" in proc.stderr
    assert "4 problem(s)" in proc.stderr and "nothing was sent" in proc.stderr
    assert recorder.mails == 0


def test_missing_template_field(tmp_path: Path, recorder_server: tuple[Recorder, SMTPServerThread]) -> None:
    recorder, thread = recorder_server
    write_csv(tmp_path / "r.csv", ["email", "first_name"], [["a@example.com", "A"]])
    proc = run_send(tmp_path, "r.csv", *BASIC, "--html", "<p>{coupon}</p>", "--server", server_url(thread))
    assert proc.returncode == 2
    assert "{coupon}" in proc.stderr and "line 1" in proc.stderr
    # A short row lacks a field that the header line has: named with its line.
    (tmp_path / "s.csv").write_text("email,first_name\na@example.com,A\nb@example.com\n", encoding="utf-8")
    proc = run_send(tmp_path, "s.csv", *BASIC, "--server", server_url(thread))
    assert proc.returncode == 2
    assert "line 3: no value for the template field {first_name}" in proc.stderr
    assert recorder.mails == 0


def test_header_injection_refused(tmp_path: Path, recorder_server: tuple[Recorder, SMTPServerThread]) -> None:
    recorder, thread = recorder_server
    write_csv(tmp_path / "r.csv", ["email", "first_name"],
              [["a@example.com", "A"], ["b@example.com", "Bob\r\nBcc: victim@example.com"]])
    proc = run_send(tmp_path, "r.csv", *BASIC, "--server", server_url(thread))
    assert proc.returncode == 2
    assert "line 3" in proc.stderr and "header injection" in proc.stderr
    assert recorder.mails == 0


def test_unreachable_server(tmp_path: Path) -> None:
    write_csv(tmp_path / "r.csv", ["email", "first_name"], [["a@example.com", "A"]])
    # A bound socket that does not listen: connections to its port are refused.
    with refused_port() as port:
        proc = run_send(tmp_path, "r.csv", *BASIC, "--server",
                        f"smtp://127.0.0.1:{port}/?max_attempts=1&connection_timeout=5")
    assert proc.returncode == 3, proc.stderr
    assert "cannot use the server" in proc.stderr and "nothing was sent" in proc.stderr
    assert not (tmp_path / "r.results.journal.sqlite").exists()


def test_authentication(tmp_path: Path) -> None:
    recorder = Recorder()
    write_csv(tmp_path / "r.csv", ["email", "first_name"], [["a@example.com", "A"]])
    with SMTPServerThread(recorder, "127.0.0.1", 0, require_auth=True, auth_require_tls=False,
                          authenticator=UsersAuthenticator({"alice": "s3cret"})) as thread:
        url = f"smtp://alice@127.0.0.1:{thread.port}/?allow_plaintext_auth=true"
        proc = run_send(tmp_path, "r.csv", *BASIC, "--server", url, FASTSMTP_PASSWORD="wrong")
        assert proc.returncode == 3, proc.stderr
        assert "cannot use the server" in proc.stderr
        assert "wrong" not in proc.stderr  # the secret never shows
        assert recorder.mails == 0
        # No password anywhere and no terminal to ask on: a usage error, nothing sent.
        proc = run_send(tmp_path, "r.csv", *BASIC, "--server", url)
        assert proc.returncode == 2 and "FASTSMTP_PASSWORD" in proc.stderr
        # --password-env names another variable; the right password sends.
        proc = run_send(tmp_path, "r.csv", *BASIC, "--server", url, "--password-env", "MY_PW",
                        MY_PW="s3cret")
        assert proc.returncode == 0, proc.stderr
        assert recorder.recipients() == Counter({"a@example.com": 1})


def test_existing_journal_refused_unless_resume_or_restart(
        tmp_path: Path, recorder_server: tuple[Recorder, SMTPServerThread]) -> None:
    recorder, thread = recorder_server
    write_csv(tmp_path / "r.csv", ["email", "first_name"], people(3))
    url = server_url(thread)
    assert run_send(tmp_path, "r.csv", *BASIC, "--server", url).returncode == 0
    proc = run_send(tmp_path, "r.csv", *BASIC, "--server", url)
    assert proc.returncode == 2 and "--resume" in proc.stderr and "--restart" in proc.stderr
    assert recorder.count() == 3
    proc = run_send(tmp_path, "r.csv", *BASIC, "--server", url, "--resume")
    assert proc.returncode == 0 and recorder.count() == 3  # all done already: nothing resent
    # --restart against a server that fails its check keeps the old journal.
    with refused_port() as port:
        dead = f"smtp://127.0.0.1:{port}/?max_attempts=1"
        proc = run_send(tmp_path, "r.csv", *BASIC, "--server", dead, "--restart")
    assert proc.returncode == 3
    assert (tmp_path / "r.results.journal.sqlite").exists()
    proc = run_send(tmp_path, "r.csv", *BASIC, "--server", url, "--resume")
    assert proc.returncode == 0 and recorder.count() == 3
    proc = run_send(tmp_path, "r.csv", *BASIC, "--server", url, "--restart")
    assert proc.returncode == 0 and recorder.count() == 6  # asked for: everyone again
    # --resume needs the journal, and the campaign's own destination.
    proc = run_send(tmp_path, "r.csv", *BASIC, "--server", url, "--resume", "--results", "o.csv")
    assert proc.returncode == 2 and "no journal" in proc.stderr
    proc = run_send(tmp_path, "r.csv", *BASIC, "--resume", "--results", "r.results.csv")
    assert proc.returncode == 2 and "belongs to a campaign sent to smtp://127.0.0.1" in proc.stderr
    assert recorder.count() == 6 and not (tmp_path / "fastsmtp-outbox").exists()


def test_usage_errors(tmp_path: Path) -> None:
    write_csv(tmp_path / "r.csv", ["email"], [["a@example.com"]])
    cases = [
        (("--from", SENDER, "--text", "x"), "--subject"),
        (("--from", SENDER, "--subject", "s"), "give a body"),
        (("--from", "not an address", "--subject", "s", "--text", "x"), "--from"),
        (("--from", SENDER, "--subject", "s", "--text", "x", "--resend-uncertain"), "--resume"),
        (("--from", SENDER, "--subject", "s", "--text", "x", "--connections", "0"), "positive"),
        (("--from", SENDER, "--subject", "s", "--text", "x", "--service", "nosuchservice"), "unknown"),
    ]
    for args, expected in cases:
        proc = run_send(tmp_path, "r.csv", *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert expected in proc.stderr, (args, proc.stderr)
    assert not (tmp_path / "fastsmtp-outbox").exists()


# -- units: journal --------------------------------------------------------------------------


def test_journal_create_open_and_pragmas(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with pytest.raises(CampaignInputError):
        Journal(path, create=False)
    journal = Journal(path, create=True)
    assert journal._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert journal._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    journal.set_meta({"destination": "smtp://x"})
    journal.close()
    with pytest.raises(CampaignInputError):
        Journal(path, create=True)
    journal = Journal(path, create=False)
    assert journal.get_meta("destination") == "smtp://x"
    assert journal.get_meta("nothing") is None
    journal.close()


def test_journal_outcomes_and_group_commit(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = Journal(path, create=True)
    journal.mark_sending([("a@x.com", "a@x.com", 2), ("b@x.com", "B@x.com", 3), ("c@x.com", "c@x.com", 4)])
    # 'sending' is durable at once: another connection (another process) sees it.
    other = sqlite3.connect(path)
    assert dict(other.execute("SELECT key, status FROM recipients")) == {
        "a@x.com": "sending", "b@x.com": "sending", "c@x.com": "sending"}
    journal.record("a@x.com", "accepted", 250, "250 ok")
    journal.record("b@x.com", "maybe-delivered", None, "lost")
    journal.record("c@x.com", "pending", None, "")
    assert journal.buffered == 3 and journal.committed == []
    # Not committed yet: a crash now would leave them 'sending' (uncertain), never resent.
    assert other.execute("SELECT status FROM recipients WHERE key='a@x.com'").fetchone()[0] == "sending"
    journal.flush()
    assert sorted(journal.committed) == [("a@x.com", "accepted"), ("b@x.com", "maybe-delivered"),
                                         ("c@x.com", "pending")]
    assert other.execute("SELECT status, code FROM recipients WHERE key='a@x.com'").fetchone() == ("accepted", 250)
    other.close()
    assert journal.entry("a@x.com") == ("accepted", 250, "250 ok")
    assert journal.status("c@x.com") == "pending" and journal.status("zzz") is None
    assert journal.counts() == {"accepted": 1, "maybe-delivered": 1, "pending": 1}
    assert journal.uncertain() == [("B@x.com", 3, "maybe-delivered")]
    # A 250 can neither be marked for sending again nor overwritten by an outcome.
    with pytest.raises(RuntimeError):
        journal.mark_sending([("a@x.com", "a@x.com", 2)])
    assert journal.status("a@x.com") == "accepted"
    journal.record("a@x.com", "rejected", 550, "no")
    journal.flush()
    assert journal.status("a@x.com") == "accepted"
    # mark_sending commits the buffered outcomes in the same transaction.
    journal.mark_sending([("c@x.com", "c@x.com", 4)])
    journal.record("c@x.com", "deferred", 451, "later")
    journal.mark_sending([("d@x.com", "d@x.com", 5)])
    assert journal.buffered == 0 and journal.status("c@x.com") == "deferred"
    journal.close()


def test_journal_crash_leaves_sending_uncertain(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = Journal(path, create=True)
    journal.mark_sending([("a@x.com", "a@x.com", 2), ("b@x.com", "b@x.com", 3)])
    journal.record("a@x.com", "accepted", 250, "ok")
    journal.flush()
    journal.record("b@x.com", "accepted", 250, "ok")  # never committed: the "crash"
    journal._db.close()
    reopened = Journal(path, create=False)
    assert reopened.status("a@x.com") == "accepted"
    assert reopened.status("b@x.com") == "sending"
    assert reopened.uncertain() == [("b@x.com", 3, "sending")]
    assert not should_send(reopened.status("a@x.com"), resend_uncertain=True)
    assert not should_send(reopened.status("b@x.com"))
    assert should_send(reopened.status("b@x.com"), resend_uncertain=True)
    reopened.close()


@pytest.mark.parametrize(
    ("status", "default", "with_resend"),
    [(None, True, True), ("pending", True, True), ("deferred", True, True),
     ("accepted", False, False), ("rejected", False, False), ("failed", False, False),
     ("maybe-delivered", False, True), ("sending", False, True)],
)
def test_should_send(status: str | None, default: bool, with_resend: bool) -> None:
    assert should_send(status) is default
    assert should_send(status, resend_uncertain=True) is with_resend


def test_classify() -> None:
    ok = SendResult(["a@x.com"], [], [], 10, (250, [b"2.0.0 queued"]))
    assert classify(ok) == ("accepted", 250, "250 2.0.0 queued")
    refused = SMTPRecipientsRefused("refused", rejected=["a@x.com"], rejected_errors=[],
                                    reply=Reply(550, ("5.1.1 unknown", "second line")))
    assert classify(refused) == ("rejected", 550, "550 5.1.1 unknown / 550 second line")
    assert classify(SMTPResponseError("busy", reply=Reply(451, ("later",))))[:2] == ("deferred", 451)
    assert classify(SMTPConnectionError("refused"))[:2] == ("deferred", None)
    assert classify(SMTPMaybeDelivered("lost after dot"))[:2] == ("maybe-delivered", None)
    assert classify(SMTPPoolClosed("closed"))[0] == "pending"
    # The one retry policy (fastsmtp.retry) judges errors without a reply: a garbled peer
    # is retried on a fresh connection (as the pool always did), a local error is final.
    assert classify(SMTPProtocolError("garbled"))[0] == "deferred"
    assert classify(SMTPInvalidEnvelope("bad address"))[0] == "failed"
    assert classify(ValueError("odd"))[0] == "failed"


# -- units: templates, addresses, CSV, progress ----------------------------------------------


def test_field_template() -> None:
    t = FieldTemplate("Hi {first_name}, {{first_name}} p { color: red } {a.b} {0} {} {last-name}")
    assert t.fields == ["first_name", "last-name"]
    assert t.render({"first_name": "Ann", "last-name": "{x}"}) == \
        "Hi Ann, {first_name} p { color: red } {a.b} {0} {} {x}"
    assert FieldTemplate.literal("a{b}@x.com").render({}) == "a{b}@x.com"


def test_message_template_refuses_injection_and_boundary_collision() -> None:
    template = MessageTemplate.from_parts(SENDER, "Hi {name}", text="Hello {name}", html="<p>{name}</p>")
    assert template.header_fields == ["email", "name"]
    assert set(template.fields) == {"email", "name"}
    raw = template.render({"email": "a@x.com", "name": "Ann"})
    assert b"Subject: Hi Ann\r\n" in raw and b"To: a@x.com\r\n" in raw
    with pytest.raises(CampaignInputError):
        template.render({"email": "a@x.com", "name": "Ann\nBcc: v@x.com"})
    boundary = template.root.boundary.decode()
    eml = email.message.EmailMessage()
    eml.set_content("{body}")
    eml.add_alternative("<p>x</p>", subtype="html")
    eml.set_boundary(boundary)
    other = MessageTemplate(eml, SENDER)
    with pytest.raises(CampaignInputError):
        other.render({"email": "a@x.com", "body": f"x\n--{boundary}\nContent-Type: text/html\n"})


def test_mailbox_error() -> None:
    for good in ("a@example.com", "first.last+tag@sub.example.org", '"quoted local"@example.com',
                 "josé@exämple.com", "a@[192.0.2.1]"):
        assert mailbox_error(good) is None, good
    for bad in ("", "plain", "@example.com", "a@", "a@@example.com", "a b@example.com",
                "a@example", "<a@example.com>", "a@-x.com", "a..b@example.com", "a@x.com\r\n",
                "x" * 65 + "@example.com"):
        assert mailbox_error(bad) is not None, bad


def test_read_recipients_lines_and_validation(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text('\ufeffEmail ,note\n"a@x.com","multi\nline"\n\nb@x.com,ok\nB@X.com,dup\n', encoding="utf-8")
    rows = list(read_recipients(str(path)))
    assert [(line, row["email"]) for line, row in rows] == [(2, "a@x.com"), (5, "b@x.com"), (6, "B@X.com")]
    template = MessageTemplate.from_parts(SENDER, "s", text="{note}")
    info = validate_recipients(str(path), template)
    assert (info.total, info.duplicates, info.email_column) == (2, 1, "Email")


def test_progress_lines() -> None:
    out = io.StringIO()
    progress = Progress(10, {"accepted": 2, "pending": 1}, out, tty=False)
    progress.moved("pending", "sending")
    progress.moved("sending", "accepted")
    progress.moved(None, "sending")
    progress.moved("sending", "rejected")
    progress.draw(force=True)
    line = out.getvalue()
    assert "4/10 sent 3 failed 1 deferred 0 uncertain 0" in line and "ETA" in line
    tty = io.StringIO()
    progress = Progress(1, {}, tty, tty=True)
    progress.draw()
    progress.finish()
    assert tty.getvalue().startswith("\r[") and tty.getvalue().endswith("\n")


def test_body_files_and_bad_encodings(tmp_path: Path) -> None:
    write_csv(tmp_path / "r.csv", ["email", "name"], [["a@example.com", "Ann"]])
    (tmp_path / "body.txt").write_text("Text for {name}\n", encoding="utf-8")
    (tmp_path / "body.html").write_text("<b>HTML for {name}</b>\n", encoding="utf-8")
    proc = run_send(tmp_path, "r.csv", "--from", SENDER, "--subject", "s {name}",
                    "--text-file", "body.txt", "--html-file", "body.html")
    assert proc.returncode == 0, proc.stderr
    [path] = list((tmp_path / "fastsmtp-outbox" / "new").iterdir())
    msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert msg.get_body(("plain",)).get_content().strip() == "Text for Ann"
    assert msg.get_body(("html",)).get_content().strip() == "<b>HTML for Ann</b>"
    # A list that is not UTF-8, or a missing body file: usage errors, nothing sent.
    (tmp_path / "latin1.csv").write_bytes("email,name\na@example.com,Jos\xe9\n".encode("latin-1"))
    proc = run_send(tmp_path, "latin1.csv", "--from", SENDER, "--subject", "s", "--text", "{name}",
                    "--maildir", "other")
    assert proc.returncode == 2 and "line 2: not UTF-8" in proc.stderr
    proc = run_send(tmp_path, "r.csv", "--from", SENDER, "--subject", "s", "--text-file", "nope.txt",
                    "--maildir", "other")
    assert proc.returncode == 2 and "nope.txt" in proc.stderr
    assert not (tmp_path / "other").exists()
