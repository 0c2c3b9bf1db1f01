"""Every fenced Python block of the README runs, as written, against in-process servers.

Each ```` ```python ```` block is a complete program. It runs in a child Python process
from a fresh temporary directory, with only these substitutions, so that the README
cannot drift from the code:

* the host names ``smtp.example.com`` and ``mail.example.com`` become ``127.0.0.1``;
* the ports name the kind of server the example talks to, and become the port of a
  server this test runs: ``2525`` a plain local sink (what ``fastsmtp serve`` is),
  ``587`` a STARTTLS server that requires AUTH, ``465`` an implicit-TLS server that
  requires AUTH;
* ``SSL_CERT_FILE`` points the child at the throwaway CA (trustme) that signed those
  servers' certificate, so certificate verification stays on;
* the files an example opens (``message.eml``, ``fullchain.pem``, ``privkey.pem``) exist in
  its directory.

An HTML comment right before a block says what to check (``<!-- readme-test: ... -->``):
``messages=N`` (the servers receive exactly N messages, the default being at least one),
``output=TEXT`` (the child prints TEXT), and ``server`` (the block is itself a server: it
is started, must print ``listening``, gets one message through smtplib, must show it in its
output, and is then interrupted).
"""

from __future__ import annotations

import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.env import readme_path

from fastsmtp import SMTPServerThread
from fastsmtp.server import make_server_ssl_context

README = readme_path()

_BLOCK = re.compile(
    r"(?:<!--\s*readme-test:(?P<directive>[^>]*)-->\s*\n)?```python\n(?P<code>.*?)```", re.S
)
#: Seconds a README program may take (they send a few hundred messages at most).
RUN_TIMEOUT = 120


@dataclass
class Example:
    """One fenced Python block of the README."""

    line: int
    code: str
    directive: dict[str, str]

    @property
    def id(self) -> str:
        return f"README.md:{self.line}"


def _examples() -> list[Example]:
    text = README.read_text(encoding="utf-8")
    found = []
    for match in _BLOCK.finditer(text):
        directive: dict[str, str] = {}
        for word in (match.group("directive") or "").split():
            key, _, value = word.partition("=")
            directive[key] = value.replace("_", " ")
        line = text.count("\n", 0, match.start("code"))
        found.append(Example(line, match.group("code"), directive))
    return found


EXAMPLES = _examples()


class Collect:
    """A handler that keeps every message and refuses ``nobody@`` recipients."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: ANN001,ANN201
        if address.startswith("nobody@"):
            return "550 5.1.1 <%s>: no such user" % address
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001,ANN201
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 2.0.0 OK: queued"


def _accept_any(server, session, envelope, mechanism, auth_data) -> bool:  # noqa: ANN001
    return True


@pytest.fixture(scope="module")
def servers(tls_ca, tls_cert, tmp_path_factory) -> Iterator[tuple[Collect, dict[int, int], Path]]:
    """The three servers the README's ports stand for, and the CA file for the child."""
    pki = tmp_path_factory.mktemp("pki")
    ca = pki / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(ca))
    chain, key = pki / "fullchain.pem", pki / "privkey.pem"
    tls_cert.private_key_pem.write_to_path(str(key))
    chain.write_bytes(b"".join(blob.bytes() for blob in tls_cert.cert_chain_pems))
    handler = Collect()
    threads = [
        SMTPServerThread(handler, host="127.0.0.1", port=0),
        SMTPServerThread(handler, host="127.0.0.1", port=0,
                         tls_context=make_server_ssl_context(str(chain), str(key)),
                         enable_auth=True, require_auth=True, authenticator=_accept_any),
        SMTPServerThread(handler, host="127.0.0.1", port=0, secure=True,
                         ssl_context=make_server_ssl_context(str(chain), str(key)),
                         enable_auth=True, require_auth=True, authenticator=_accept_any),
    ]
    for thread in threads:
        thread.start()
    try:
        ports = {2525: threads[0].port, 587: threads[1].port, 465: threads[2].port}
        yield handler, ports, pki
    finally:
        for thread in threads:
            thread.stop()


def _rewrite(code: str, ports: dict[int, int]) -> str:
    code = re.sub(r"\b(?:smtp|mail)\.example\.com\b", "127.0.0.1", code)
    return re.sub(r"(?<![\w.])(2525|587|465)(?![\w.])", lambda m: str(ports[int(m.group(1))]), code)


def _child_env(pki: Path) -> dict[str, str]:
    import fastsmtp

    root = os.path.dirname(os.path.dirname(os.path.abspath(fastsmtp.__file__)))
    path = os.environ.get("PYTHONPATH", "")
    return dict(os.environ, PYTHONPATH=root + (os.pathsep + path if path else ""),
                SSL_CERT_FILE=str(pki / "ca.pem"), PYTHONUNBUFFERED="1")


def _workdir(tmp_path: Path, pki: Path) -> Path:
    for name in ("fullchain.pem", "privkey.pem"):
        (tmp_path / name).write_bytes((pki / name).read_bytes())
    (tmp_path / "message.eml").write_bytes(
        b"From: me@example.com\r\nTo: you@example.org\r\nSubject: from a file\r\n\r\nHello.\r\n"
    )
    return tmp_path


def test_readme_has_examples() -> None:
    assert len(EXAMPLES) >= 6, "the README lost its Python examples"
    # An async program must run its coroutine; a pytest file (its tests are run by pytest)
    # is the one kind of example that does not.
    assert all("asyncio.run(" in e.code or "Sync" in e.code or "server" in e.directive
               or "def test_" in e.code
               for e in EXAMPLES if "async " in e.code), "an async example never runs its coroutine"


@pytest.mark.parametrize("example", [e for e in EXAMPLES if "server" not in e.directive],
                         ids=lambda e: e.id)
def test_readme_client_example(example: Example, servers, tmp_path: Path) -> None:
    handler, ports, pki = servers
    before = len(handler.messages)
    done = subprocess.run(
        [sys.executable, "-c", _rewrite(example.code, ports)], cwd=_workdir(tmp_path, pki),
        env=_child_env(pki), capture_output=True, text=True, timeout=RUN_TIMEOUT,
    )
    assert done.returncode == 0, f"{example.id} failed:\n{done.stdout}\n{done.stderr}"
    received = len(handler.messages) - before
    if "messages" in example.directive:
        assert received == int(example.directive["messages"]), done.stdout
    else:
        assert received >= 1, f"{example.id} sent nothing"
    if "output" in example.directive:
        assert example.directive["output"] in done.stdout


def _free_port() -> int:
    # The child binds the port itself (the example names it); a race with another
    # process taking it in between only fails the test loudly, it never passes wrongly.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("example", [e for e in EXAMPLES if "server" in e.directive],
                         ids=lambda e: e.id)
def test_readme_server_example(example: Example, servers, tmp_path: Path) -> None:
    _, ports, pki = servers
    own = {**ports, 2525: _free_port()}
    child = subprocess.Popen(
        [sys.executable, "-c", _rewrite(example.code, own)], cwd=_workdir(tmp_path, pki),
        env=_child_env(pki), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        assert child.stdout is not None
        first = child.stdout.readline()  # the example prints once it listens
        assert "listening" in first, first + child.stdout.read()
        with smtplib.SMTP("127.0.0.1", own[2525], timeout=30) as client:
            client.sendmail("me@example.com", ["you@example.com"],
                            b"Subject: readme\r\n\r\nhello\r\n")
            with pytest.raises(smtplib.SMTPRecipientsRefused):
                client.sendmail("me@example.com", ["you@elsewhere.org"], b"x\r\n")
    finally:
        child.send_signal(signal.SIGINT)
        out, _ = child.communicate(timeout=RUN_TIMEOUT)
    assert example.directive.get("output", "you@example.com") in first + out
