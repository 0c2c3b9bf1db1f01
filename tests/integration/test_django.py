"""fastsmtp.django.EmailBackend with the real Django, against fastsmtp's own server.

Django is configured in-process (``settings.configure``) with the classic ``EMAIL_*``
settings; each test points ``EMAIL_PORT`` (or a ``MAILERS`` entry, on Django >= 6.1) at a
fresh :class:`~fastsmtp.server.SMTPServerThread` whose :class:`~fastsmtp.handlers.Collector`
keeps what arrived, and checks it: envelope, parsed headers, parts.
"""

from __future__ import annotations

import os
import smtplib
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

django = pytest.importorskip("django")

from django.conf import settings  # noqa: E402
from django.core import mail  # noqa: E402
from django.test.utils import override_settings  # noqa: E402
from support.ports import refused_port  # noqa: E402

from fastsmtp import SMTPServerThread  # noqa: E402
from fastsmtp.django import EmailBackend, close_pools  # noqa: E402
from fastsmtp.errors import SMTPEnvelopeNotSupported  # noqa: E402
from fastsmtp.handlers import Collector, ReceivedMessage  # noqa: E402

# Django 6 takes plain addresses in ADMINS/MANAGERS; 5.2 wants (name, address) pairs.
_NEW_ADMINS = django.VERSION >= (6, 0)
HAS_MAILERS = hasattr(mail, "mailers")
needs_mailers = pytest.mark.skipif(not HAS_MAILERS, reason=(
    f"Django {django.get_version()} has no mail.mailers (MAILERS arrived in Django 6.1)"))

if not settings.configured:
    settings.configure(
        EMAIL_BACKEND="fastsmtp.django.EmailBackend",
        EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=25,  # every test overrides it with its server's port
        DEFAULT_FROM_EMAIL="Web Site <webmaster@example.com>",
        SERVER_EMAIL="server@example.com",
        ADMINS=["admin@example.com"] if _NEW_ADMINS else [("Admin", "admin@example.com")],
        MANAGERS=["boss@example.com"] if _NEW_ADMINS else [("Boss", "boss@example.com")],
        EMAIL_SUBJECT_PREFIX="[site] ",
    )
    django.setup()


@pytest.fixture(autouse=True)
def _fresh_pools() -> Iterator[None]:
    # Pools are per configuration and every test has its own server port: close them
    # so no loop thread outlives its test.
    yield
    close_pools()


class Server:
    def __init__(self, collector: Collector, thread: SMTPServerThread) -> None:
        self.collector = collector
        self.thread = thread
        self.port = thread.port

    @property
    def messages(self) -> list[ReceivedMessage]:
        return self.collector.messages


def _start(**options: Any) -> Iterator[Server]:
    collector = Collector(options.pop("users", None))
    thread = SMTPServerThread(collector, "127.0.0.1", 0, **options)
    thread.start()
    try:
        yield Server(collector, thread)
    finally:
        thread.stop()


@pytest.fixture
def server() -> Iterator[Server]:
    """A plain server, with Django's EMAIL_PORT pointing at it."""
    for running in _start():
        with override_settings(EMAIL_PORT=running.port):
            yield running


def test_send_mail_display_names_and_non_ascii_subject(server: Server) -> None:
    count = mail.send_mail("Grüße aus Köln", "Hallo!\nZweite Zeile.", "Jörg Müller <jorg@example.com>",
                           ["Ann <ann@example.org>", "bob@example.org"])
    assert count == 1
    (received,) = server.messages
    assert received.mail_from == "jorg@example.com"
    assert received.rcpt_tos == ["ann@example.org", "bob@example.org"]
    assert "SMTPUTF8" not in received.mail_options  # all ASCII on the envelope
    msg = received.message
    assert msg["Subject"] == "Grüße aus Köln"
    assert msg["From"].addresses[0].display_name == "Jörg Müller"
    assert [a.addr_spec for a in msg["To"].addresses] == ["ann@example.org", "bob@example.org"]
    assert msg.get_content().replace("\r\n", "\n") == "Hallo!\nZweite Zeile.\n"
    assert b"\r\n" in received.content and b"\n" not in received.content.replace(b"\r\n", b"")


def test_email_message_cc_bcc_reply_to_headers(server: Server) -> None:
    message = mail.EmailMessage(
        "Report", "See below.", "reports@example.com", ["to@example.org"],
        cc=["Carl <cc@example.org>"], bcc=["secret@example.net"],
        reply_to=["Desk <desk@example.com>"], headers={"X-Report-Id": "42"},
    )
    assert message.send() == 1
    (received,) = server.messages
    assert received.mail_from == "reports@example.com"
    assert received.rcpt_tos == ["to@example.org", "cc@example.org", "secret@example.net"]
    msg = received.message
    assert msg["Cc"].addresses[0].addr_spec == "cc@example.org"
    assert msg["Reply-To"].addresses[0].display_name == "Desk"
    assert msg["X-Report-Id"] == "42"
    assert msg["Bcc"] is None
    assert b"secret@example.net" not in received.content


def test_multi_alternatives_with_attachment(server: Server) -> None:
    message = mail.EmailMultiAlternatives("Invoice", "Plain text.", "billing@example.com",
                                          ["client@example.org"])
    message.attach_alternative("<p>HTML <b>text</b>.</p>", "text/html")
    pdf = bytes(range(256)) * 4
    message.attach("invoice.pdf", pdf, "application/pdf")
    assert message.send() == 1
    (received,) = server.messages
    msg = received.message
    assert msg.get_content_type() == "multipart/mixed"
    assert msg.get_body(("plain",)).get_content().strip() == "Plain text."
    assert msg.get_body(("html",)).get_content().strip() == "<p>HTML <b>text</b>.</p>"
    (attachment,) = list(msg.iter_attachments())
    assert attachment.get_filename() == "invoice.pdf"
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_content() == pdf


def test_send_mass_mail_sends_each_message(server: Server) -> None:
    datatuple = [(f"Subject {i}", f"Body {i}", "bulk@example.com", [f"user{i}@example.org"])
                 for i in range(5)]
    assert mail.send_mass_mail(datatuple) == 5
    got = sorted((m.rcpt_tos[0], str(m.message["Subject"])) for m in server.messages)
    assert got == [(f"user{i}@example.org", f"Subject {i}") for i in range(5)]
    assert all(m.mail_from == "bulk@example.com" for m in server.messages)


def test_messages_without_recipients_are_not_sent(server: Server) -> None:
    backend = EmailBackend()
    nobody = mail.EmailMessage("x", "y", "a@example.com", [])
    somebody = mail.EmailMessage("x", "y", "a@example.com", ["b@example.org"])
    assert backend.send_messages([]) == 0
    assert backend.send_messages([nobody]) == 0
    assert backend.send_messages([nobody, somebody]) == 1
    assert [m.rcpt_tos for m in server.messages] == [["b@example.org"]]


def test_mail_admins_and_managers(server: Server) -> None:
    mail.mail_admins("Error", "Something broke.", html_message="<p>Something broke.</p>")
    mail.mail_managers("Broken link", "A 404.")
    admins, managers = server.messages
    assert admins.mail_from == "server@example.com"
    assert admins.rcpt_tos == ["admin@example.com"]
    assert admins.message["Subject"] == "[site] Error"
    assert admins.message.get_body(("html",)).get_content().strip() == "<p>Something broke.</p>"
    assert managers.rcpt_tos == ["boss@example.com"]
    assert managers.message["Subject"] == "[site] Broken link"


# One attempt, short backoffs: the pool backs off from a refusing server, and these tests
# need its verdict, not its patience.
FAIL_FAST = {"max_attempts": 1, "retry_delay": 0.01, "retry_delay_max": 0.05}


def test_fail_silently_both_ways() -> None:
    with refused_port() as port, override_settings(EMAIL_PORT=port, FASTSMTP_OPTIONS=FAIL_FAST):
        assert mail.send_mail("s", "b", "a@example.com", ["b@example.org"],
                              fail_silently=True) == 0
        with pytest.raises((smtplib.SMTPException, OSError)):
            mail.send_mail("s", "b", "a@example.com", ["b@example.org"])
        backend = EmailBackend(fail_silently=True)
        two = [mail.EmailMessage("s", "b", "a@example.com", [f"{n}@example.org"])
               for n in ("x", "y")]
        assert backend.send_messages(two) == 0
        with pytest.raises((smtplib.SMTPException, OSError)):
            EmailBackend().send_messages(two)


def test_context_manager_and_instances_share_one_warm_connection(server: Server) -> None:
    with mail.get_connection() as connection:
        assert isinstance(connection, EmailBackend)
        assert connection.open() is False  # already open: nothing new needed
        connection.send_messages([mail.EmailMessage("one", "1", "a@example.com", ["x@example.org"])])
        connection.send_messages([mail.EmailMessage("two", "2", "a@example.com", ["y@example.org"])])
    assert connection.pool is None  # closed: detached from the pool
    # A new instance (what send_mail makes every time) finds the same pool, still warm.
    mail.send_mail("three", "3", "a@example.com", ["z@example.org"])
    peers = {m.peer for m in server.messages}
    assert [m.message["Subject"] for m in server.messages] == ["one", "two", "three"]
    assert len(peers) == 1, f"expected one reused connection, got {peers}"
    backend = EmailBackend()
    assert backend.open() is True
    assert backend.open() is False
    backend.close()


def test_open_close_and_exit_leave_other_instances_working(server: Server) -> None:
    first, second = EmailBackend(), EmailBackend()
    first.open()
    second.open()
    first.close()
    assert second.send_messages([mail.EmailMessage("s", "b", "a@example.com", ["b@example.org"])]) == 1
    second.close()
    assert len(server.messages) == 1


def test_non_ascii_addresses_use_smtputf8_when_offered(server: Server) -> None:
    count = mail.send_mail("Hallo", "Text", "jörg@example.com", ["anna@exämple.org", "zoë@example.org"])
    assert count == 1
    (received,) = server.messages
    assert "SMTPUTF8" in received.mail_options
    assert received.mail_from == "jörg@example.com"
    # The domain is IDNA-encoded; the local part stays UTF-8 (SMTPUTF8).
    assert received.rcpt_tos == ["anna@xn--exmple-cua.org", "zoë@example.org"]


def test_non_ascii_domain_alone_needs_no_smtputf8(server: Server) -> None:
    assert mail.send_mail("Hallo", "Text", "a@example.com", ["anna@exämple.org"]) == 1
    (received,) = server.messages
    assert "SMTPUTF8" not in received.mail_options
    assert received.rcpt_tos == ["anna@xn--exmple-cua.org"]


def test_non_ascii_local_part_without_smtputf8_is_refused() -> None:
    for running in _start(smtputf8=False):
        with override_settings(EMAIL_PORT=running.port):
            with pytest.raises(SMTPEnvelopeNotSupported):
                mail.send_mail("s", "b", "a@example.com", ["zoë@example.org"])
            assert mail.send_mail("s", "b", "a@example.com", ["zoë@example.org"],
                                  fail_silently=True) == 0
        assert running.messages == []


def test_invalid_address_is_a_value_error(server: Server) -> None:
    with pytest.raises(ValueError, match="Invalid address"):
        mail.send_mail("s", "b", "a@example.com", ["one@example.org, two@example.org"])
    assert server.messages == []


# TLS tests connect to 127.0.0.1 (the certificate names it too), never "localhost": that
# may resolve to ::1 first, where another process's server could be listening.
def test_starttls_and_login_with_classic_settings(tls_ca, server_ssl_context, tmp_path) -> None:
    cafile = tmp_path / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(cafile))
    for running in _start(tls_context=server_ssl_context, require_auth=True,
                          users={"mailer": "s3cret"}):
        with override_settings(EMAIL_PORT=running.port, EMAIL_USE_TLS=True,
                               EMAIL_HOST="127.0.0.1", EMAIL_HOST_USER="mailer",
                               EMAIL_HOST_PASSWORD="s3cret", EMAIL_TIMEOUT=30):
            connection = mail.get_connection(tls={"cafile": str(cafile)}, max_connections=2)
            assert mail.send_mail("tls", "b", "a@example.com", ["b@example.org"],
                                  connection=connection) == 1
        (received,) = running.messages
        assert received.tls is True
        assert received.login == "mailer"


def test_login_when_aiosmtpd_is_imported(server_ssl_context) -> None:
    # Importing aiosmtpd makes the server hand out aiosmtpd's LoginPassword: the
    # Collector must still recognise its users.
    pytest.importorskip("aiosmtpd.smtp")
    for running in _start(require_auth=True, auth_require_tls=False, users={"u": "pw"}):
        backend = EmailBackend(host="127.0.0.1", port=running.port, username="u", password="pw")
        assert backend.send_messages([mail.EmailMessage("s", "b", "a@example.com",
                                                        ["b@example.org"])]) == 1
        assert running.messages[0].login == "u"
        bad = EmailBackend(host="127.0.0.1", port=running.port, username="u", password="no",
                           max_attempts=1)
        with pytest.raises(smtplib.SMTPAuthenticationError):
            bad.send_messages([mail.EmailMessage("s", "b", "a@example.com", ["b@example.org"])])


def test_implicit_tls(tls_ca, server_ssl_context, tmp_path) -> None:
    cafile = tmp_path / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(cafile))
    for running in _start(secure=True, ssl_context=server_ssl_context):
        backend = EmailBackend(host="127.0.0.1", port=running.port, use_ssl=True,
                               tls={"cafile": str(cafile)})
        assert backend.send_messages([mail.EmailMessage("s", "b", "a@example.com",
                                                        ["b@example.org"])]) == 1
        assert running.messages[0].tls is True


def test_bad_options_are_errors() -> None:
    with pytest.raises(ValueError, match="mutually exclusive"):
        EmailBackend(use_tls=True, use_ssl=True)
    with pytest.raises(ValueError, match="max_connections"):
        EmailBackend(max_connections=0)
    with pytest.raises(ValueError, match="unknown tls option"):
        EmailBackend(tls={"verfy": False})
    if not HAS_MAILERS:  # Django >= 6.1 warns about unknown options outside MAILERS
        with pytest.raises(TypeError, match="'bogus'"):
            EmailBackend(bogus=1)
    with override_settings(FASTSMTP_OPTIONS={"max_conections": 2}):
        with pytest.raises(TypeError, match="'max_conections'.*max_connections"):
            EmailBackend()


def test_fastsmtp_options_setting_reaches_the_pool(server: Server) -> None:
    with override_settings(FASTSMTP_OPTIONS={"max_connections": 3, "rate_limit": 50}):
        backend = EmailBackend(max_connections=4)  # a keyword wins over the setting
        assert backend.options["max_connections"] == 4
        assert backend.options["rate_limit"] == 50
        with backend:
            assert backend.pool is not None
            assert backend.pool.pool.pool_options.max_connections == 4
            assert backend.send_messages([mail.EmailMessage("s", "b", "a@example.com",
                                                            ["b@example.org"])]) == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_builds_its_own_pool(server: Server) -> None:
    assert mail.send_mail("parent", "b", "a@example.com", ["p@example.org"]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads running
        pid = os.fork()
    if pid == 0:  # the child: must not touch the parent's pool (its thread is not here)
        status = 1
        try:
            status = 0 if mail.send_mail("child", "b", "a@example.com", ["c@example.org"]) == 1 else 2
            close_pools()
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert mail.send_mail("parent again", "b", "a@example.com", ["p@example.org"]) == 1
    subjects = [str(m.message["Subject"]) for m in server.messages]
    assert subjects == ["parent", "child", "parent again"]
    peers = [m.peer for m in server.messages]
    assert peers[0] == peers[2] != peers[1]  # the parent's warm connection survived


# -- Django >= 6.1: MAILERS -----------------------------------------------------------------


def _mailers(port: int, **extra: Any) -> dict[str, Any]:
    return {
        "default": {"BACKEND": "fastsmtp.django.EmailBackend",
                    "OPTIONS": {"host": "127.0.0.1", "port": port, "max_connections": 2}},
        "bulk": {"BACKEND": "fastsmtp.django.EmailBackend",
                 "OPTIONS": {"host": "127.0.0.1", "port": port, "rate_limit": 1000,
                             "max_connections": 4, **extra}},
    }


@needs_mailers
def test_mailers_entries_send(server: Server) -> None:
    with override_settings(MAILERS=_mailers(server.port)):
        bulk = mail.mailers["bulk"]
        assert isinstance(bulk, EmailBackend)
        assert bulk.alias == "bulk"
        messages = [mail.EmailMessage(f"n{i}", "b", "bulk@example.com", [f"u{i}@example.org"])
                    for i in range(4)]
        assert bulk.send_messages(messages) == 4
        assert mail.send_mail("default", "b", "a@example.com", ["d@example.org"]) == 1
        assert mail.send_mail("using", "b", "a@example.com", ["e@example.org"], using="bulk") == 1
        mail.mail_admins("admins", "b", using="bulk")
    subjects = sorted(str(m.message["Subject"]) for m in server.messages)
    assert subjects == ["[site] admins", "default", "n0", "n1", "n2", "n3", "using"]


@needs_mailers
def test_mailers_options_are_validated(server: Server) -> None:
    InvalidMailer = mail.InvalidMailer
    cases = {
        "unknown": ({"host": "127.0.0.1", "bogus": 1}, "bogus"),
        "no host": ({"port": server.port}, "host"),
        "both tls": ({"host": "127.0.0.1", "use_tls": True, "use_ssl": True}, "exclusive"),
        "bad pool": ({"host": "127.0.0.1", "max_connections": 0}, "max_connections"),
        "bad tls": ({"host": "127.0.0.1", "tls": {"verfy": False}}, "unknown tls option"),
    }
    mailers = {name: {"BACKEND": "fastsmtp.django.EmailBackend", "OPTIONS": options}
               for name, (options, _) in cases.items()}
    with override_settings(MAILERS=mailers):
        for name, (_, word) in cases.items():
            with pytest.raises(InvalidMailer, match=word) as caught:
                mail.mailers[name]
            assert repr(name) in str(caught.value)  # names the MAILERS entry


@needs_mailers
def test_mailers_fail_silently_option() -> None:
    with refused_port() as port:
        mailers = _mailers(port, fail_silently=True, **FAIL_FAST)
        mailers["default"]["OPTIONS"].update(FAIL_FAST)
        with override_settings(MAILERS=mailers):
            message = mail.EmailMessage("s", "b", "a@example.com", ["b@example.org"])
            assert mail.mailers["bulk"].send_messages([message]) == 0
            with pytest.raises((smtplib.SMTPException, OSError)):
                mail.mailers["default"].send_messages([message])


@needs_mailers
def test_mailers_do_not_read_email_settings(server: Server) -> None:
    # A mailer takes its OPTIONS only: EMAIL_HOST_USER must not turn into a login.
    with override_settings(MAILERS=_mailers(server.port), EMAIL_HOST_USER="u",
                           EMAIL_HOST_PASSWORD="p", EMAIL_USE_TLS=True):
        assert mail.send_mail("s", "b", "a@example.com", ["b@example.org"]) == 1
    assert server.messages[0].login is None
    assert server.messages[0].tls is False

