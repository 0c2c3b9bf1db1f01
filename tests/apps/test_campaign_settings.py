"""``fastsmtp send`` (issue 10): a server-wide configuration error stops the campaign with
exit 3 and keeps the list for ``--resume``; ``--from "Name <address>"``; ``--cafile``.

The real CLI as a subprocess against our server (:class:`SMTPServerThread`) on 127.0.0.1.
"""

from __future__ import annotations

import csv
import email
import email.policy
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from support.env import child_env

from fastsmtp.cli.serve import UsersAuthenticator
from fastsmtp.server import SMTPServerThread

RUN_TIMEOUT = 90.0
SENDER = "news@example.net"
BASIC = ("--subject", "Hi {first_name}", "--text", "Hello {first_name}")


def run_send(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = child_env()
    environ.pop("FASTSMTP_PASSWORD", None)
    environ.update(env)
    return subprocess.run([sys.executable, "-m", "fastsmtp", "send", *args], cwd=cwd,
                          env=environ, capture_output=True, text=True, timeout=RUN_TIMEOUT,
                          stdin=subprocess.DEVNULL)


def write_list(path: Path, n: int) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["email", "first_name"])
        writer.writerows([f"user{i}@example.com", f"User{i}"] for i in range(n))
    return path


def read_results(path: Path) -> dict[str, dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as fh:
        return {row["email"]: row for row in csv.DictReader(fh)}


class Recorder:
    """Records accepted messages; ``refuse_mail`` refuses every MAIL with that reply."""

    def __init__(self, refuse_mail: str | None = None) -> None:
        self.refuse_mail = refuse_mail
        self.messages: list[tuple[str, str, bytes]] = []  # (sender, recipient, content)
        self.lock = threading.Lock()

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:
        if self.refuse_mail:
            return self.refuse_mail
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.messages.append((envelope.mail_from, rcpt, envelope.content))
        return "250 2.0.0 Ok"


def test_authentication_required_stops_with_exit_3_then_resume_sends_all(tmp_path: Path) -> None:
    write_list(tmp_path / "r.csv", 40)
    recorder = Recorder()
    with SMTPServerThread(recorder, "127.0.0.1", 0, require_auth=True, auth_require_tls=False,
                          authenticator=UsersAuthenticator({"alice": "s3cret"})) as thread:
        # No --user: the server answers MAIL with 530 5.7.0 Authentication required.
        url = f"smtp://127.0.0.1:{thread.port}/"
        proc = run_send(tmp_path, "r.csv", "--from", SENDER, *BASIC, "--server", url)
        assert proc.returncode == 3, proc.stderr
        assert "check --user / the server URL" in proc.stderr
        assert "--resume" in proc.stderr
        results = read_results(tmp_path / "r.results.csv")
        statuses = {row["status"] for row in results.values()}
        assert "rejected" not in statuses  # nobody is burnt: final statuses stay unused
        assert statuses <= {"deferred", "pending"}
        assert any(row["status"] == "deferred" and row["code"] == "530"
                   for row in results.values())
        assert not recorder.messages
        # The right settings: --resume sends every one of them, once.
        url = f"smtp://alice@127.0.0.1:{thread.port}/?allow_plaintext_auth=true"
        proc = run_send(tmp_path, "r.csv", "--from", SENDER, *BASIC, "--server", url,
                        "--resume", FASTSMTP_PASSWORD="s3cret")
        assert proc.returncode == 0, proc.stderr
    results = read_results(tmp_path / "r.results.csv")
    assert {row["status"] for row in results.values()} == {"accepted"}
    assert sorted(r for _, r, _ in recorder.messages) == sorted(results)


def test_the_same_5xx_to_mail_for_the_first_messages_stops(tmp_path: Path) -> None:
    write_list(tmp_path / "r.csv", 30)
    recorder = Recorder(refuse_mail="553 5.7.1 sender not allowed for this account")
    with SMTPServerThread(recorder, "127.0.0.1", 0) as thread:
        proc = run_send(tmp_path, "r.csv", "--from", SENDER, *BASIC, "--server",
                        f"smtp://127.0.0.1:{thread.port}/", "--connections", "1")
        assert proc.returncode == 3, proc.stderr
        assert "check --user / the server URL" in proc.stderr
        results = read_results(tmp_path / "r.results.csv")
        assert {row["status"] for row in results.values()} <= {"deferred", "pending"}
        recorder.refuse_mail = None  # the account may now use the sender
        proc = run_send(tmp_path, "r.csv", "--from", SENDER, *BASIC, "--server",
                        f"smtp://127.0.0.1:{thread.port}/", "--resume")
        assert proc.returncode == 0, proc.stderr
    assert len(recorder.messages) == 30


def test_from_with_a_display_name(tmp_path: Path) -> None:
    write_list(tmp_path / "r.csv", 2)
    recorder = Recorder()
    with SMTPServerThread(recorder, "127.0.0.1", 0) as thread:
        proc = run_send(tmp_path, "r.csv", "--from", "News Desk <news@example.net>", *BASIC,
                        "--server", f"smtp://127.0.0.1:{thread.port}/")
        assert proc.returncode == 0, proc.stderr
    assert [s for s, _, _ in recorder.messages] == [SENDER, SENDER]  # the envelope: address
    message = email.message_from_bytes(recorder.messages[0][2], policy=email.policy.default)
    assert message["From"].addresses[0].display_name == "News Desk"
    assert message["From"].addresses[0].addr_spec == SENDER
    assert message["Message-ID"].endswith("@example.net>")


def test_from_with_a_line_break_in_the_name_is_refused(tmp_path: Path) -> None:
    write_list(tmp_path / "r.csv", 1)
    proc = run_send(tmp_path, "r.csv", "--from", "News\r\nBcc: x@y.z <news@example.net>",
                    *BASIC)
    assert proc.returncode == 2 and "--from" in proc.stderr


def test_cafile_verifies_a_private_ca(tmp_path: Path, tls_ca: Any,
                                      server_ssl_context: Any) -> None:
    write_list(tmp_path / "r.csv", 1)
    ca = tmp_path / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(ca))
    recorder = Recorder()
    with SMTPServerThread(recorder, "127.0.0.1", 0, secure=True,
                          ssl_context=server_ssl_context) as thread:
        url = f"smtps://127.0.0.1:{thread.port}/?max_attempts=1"
        proc = run_send(tmp_path, "r.csv", "--from", SENDER, *BASIC, "--server", url)
        assert proc.returncode == 3
        assert "--cafile" in proc.stderr and "tls.cafile" in proc.stderr  # the fix, named
        proc = run_send(tmp_path, "r.csv", "--from", SENDER, *BASIC, "--server", url,
                        "--cafile", str(ca))
        assert proc.returncode == 0, proc.stderr
    assert len(recorder.messages) == 1
