"""The sans-IO parts of the client: options, EHLO capabilities, SASL, envelopes, sources."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import pickle
import ssl
from email.message import EmailMessage

import pytest

from fastsmtp.auth import CramMD5, Login, Plain, XOAuth2, choose_mechanism, decode_challenge
from fastsmtp.ehlo import parse_ehlo
from fastsmtp import errors
from fastsmtp._codec import DataEncoder
from fastsmtp.errors import SMTPAuthError, SMTPEnvelopeError
from fastsmtp._syntax import path_error, xtext
from fastsmtp.message import (
    DSN,
    Envelope,
    data_size,
    envelope_from_message,
    message_payload,
)
from fastsmtp.options import ConnectionOptions, default_port, make_ssl_context
from fastsmtp.pool import parse_url
from fastsmtp.reply import Reply

# -- options -----------------------------------------------------------------------------


def test_port_defaults() -> None:
    assert ConnectionOptions().port == 587
    assert ConnectionOptions(secure=True).port == 465
    assert ConnectionOptions(lmtp=True).port == 24
    assert ConnectionOptions(port=25).port == 25
    assert default_port(secure=True, lmtp=True) == 465


def test_timeouts_are_float_seconds() -> None:
    opts = ConnectionOptions(connection_timeout=5, greeting_timeout=0.5)
    assert opts.connection_timeout == 5.0 and isinstance(opts.connection_timeout, float)
    for bad in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ValueError):
            ConnectionOptions(socket_timeout=bad)
    with pytest.raises(TypeError):
        ConnectionOptions(socket_timeout="10")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"port": 0}, {"port": 70000}, {"host": ""}, {"auth_method": "X-UNKNOWN"},
        {"require_tls": True, "ignore_tls": True},
        {"require_tls": True, "opportunistic_tls": True},
        {"tls": {"verify_peer": False}}, {"local_address": ("x", "y")},
    ],
)
def test_invalid_options(kwargs) -> None:
    with pytest.raises(ValueError):
        ConnectionOptions(**kwargs)


def test_options_are_frozen_and_tls_built_once() -> None:
    opts = ConnectionOptions(auth_method="plain")
    assert opts.auth_method == "PLAIN"
    with pytest.raises(AttributeError):
        opts.host = "x"  # type: ignore[misc]
    assert opts.ssl_context.verify_mode == ssl.CERT_REQUIRED and opts.ssl_context.check_hostname
    ctx = ssl.create_default_context()
    assert ConnectionOptions(tls=ctx).ssl_context is ctx
    loose = make_ssl_context({"verify": False})
    assert loose.verify_mode == ssl.CERT_NONE and not loose.check_hostname
    assert ConnectionOptions(tls={"server_hostname": "mx.test"}).server_hostname == "mx.test"


def test_repr_hides_the_tls_key_password() -> None:
    opts = ConnectionOptions(tls={"verify": False, "certfile": None, "password": "hunter2"})
    text = repr(opts)
    assert "hunter2" not in text
    assert "'password': '***'" in text and "'verify': False" in text
    assert text.startswith("ConnectionOptions(host='localhost', port=587,")
    assert "ssl_context" not in text  # fields with repr=False stay out, as before
    assert opts.tls["password"] == "hunter2"  # only the repr hides it


@pytest.mark.parametrize("key", ["rejectUnauthorized", "reject_unauthorized"])
def test_reject_unauthorized_is_an_alias_of_verify(key) -> None:
    for off in (False, "false", "FALSE"):
        ctx = make_ssl_context({key: off})
        assert ctx.verify_mode == ssl.CERT_NONE and not ctx.check_hostname
    on = make_ssl_context({key: True})
    assert on.verify_mode == ssl.CERT_REQUIRED and on.check_hostname
    assert make_ssl_context({key: False, "verify": False}).verify_mode == ssl.CERT_NONE
    with pytest.raises(ValueError, match="contradictory"):
        make_ssl_context({key: False, "verify": True})
    with pytest.raises(ValueError, match="bool"):
        make_ssl_context({key: "maybe"})


def test_reject_unauthorized_from_a_pool_url() -> None:
    # parse_url passes tls.* values through as text; the options take "false".
    options = parse_url("smtp://mx.test:2525/?tls.rejectUnauthorized=false")
    opts = ConnectionOptions(host=options["host"], port=options["port"], tls=options["tls"])
    assert opts.ssl_context.verify_mode == ssl.CERT_NONE


# -- errors ------------------------------------------------------------------------------


def _error_instances() -> list[errors.SMTPError]:
    reply = Reply(550, ("5.1.1 no such user", "second line"))
    out: list[errors.SMTPError] = []
    for name in errors.__all__:
        cls = getattr(errors, name)
        if not isinstance(cls, type):
            continue  # reply_error_class, a function
        if cls is errors.SMTPRecipientsRefused:
            refused = errors.SMTPEnvelopeError("recipient b refused", reply=reply)
            out.append(cls("every recipient was refused", rejected=["b@x.test"],
                           rejected_errors=[refused], reply=reply))
        else:
            out.append(cls(f"{name} happened", reply=reply))
            out.append(cls(f"{name} happened", code="ECUSTOM"))
    return out


@pytest.mark.parametrize("error", _error_instances(), ids=lambda e: f"{type(e).__name__}-{e.code}")
def test_every_error_pickles(error) -> None:
    error.extra = {"kept": True}  # any attribute a caller added travels too
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert copy.args == error.args and str(copy) == str(error)
    assert copy.message == error.message and copy.code == error.code
    assert copy.reply == error.reply and copy.response == error.response
    assert copy.transient == error.transient and copy.extra == {"kept": True}
    if isinstance(error, errors.SMTPRecipientsRefused):
        assert copy.rejected == ["b@x.test"]
        [refused] = copy.rejected_errors
        assert type(refused) is errors.SMTPEnvelopeError and refused.reply == error.reply


def test_error_families() -> None:
    from fastsmtp.pool import _retryable

    tls = errors.SMTPTLSError("handshake failed")
    assert isinstance(tls, ConnectionError) and tls.code == "ETLS"
    assert not _retryable(tls)  # the pool checks TLS before ConnectionError
    sock = errors.SMTPSocketError("connection lost: reset")
    assert isinstance(sock, errors.SMTPServerDisconnected) and sock.code == "ESOCKET"
    assert sock.transient and _retryable(sock)


def test_connection_takes_every_connection_option_as_a_keyword() -> None:
    from fastsmtp.connection import SMTPConnection
    from fastsmtp.options import CONNECTION_OPTION_NAMES

    conn = SMTPConnection("mx.test", secure=True, socket_timeout=5, auth_method="plain")
    assert conn.options == ConnectionOptions(host="mx.test", secure=True, socket_timeout=5,
                                             auth_method="PLAIN")
    assert conn.options.port == 465
    # Every ConnectionOptions field is accepted, and nothing else.
    assert CONNECTION_OPTION_NAMES == {
        "host", "port", "secure", "ignore_tls", "require_tls", "opportunistic_tls", "name",
        "local_address", "connection_timeout", "greeting_timeout", "socket_timeout",
        "auth_method", "tls", "lmtp", "allow_plaintext_auth", "debug", "auth_mechanisms",
        "domain", "dkim", "proxy", "resolver", "dns_cache_ttl", "happy_eyeballs_delay",
        "chunking", "pipeline_window",
    }
    with pytest.raises(TypeError, match=r"unknown connection option 'sekure'.*ConnectionOptions"):
        SMTPConnection("mx.test", sekure=True)
    with pytest.raises(ValueError, match="port"):
        SMTPConnection("mx.test", 70000)
    shared = ConnectionOptions(host="mx.test")
    assert SMTPConnection(options=shared).options is shared
    for clash in ({"host": "other.test"}, {"port": 25}, {"secure": True}):
        with pytest.raises(TypeError, match="either options"):
            SMTPConnection(options=shared, **clash)


def test_one_text_to_bool_rule_for_urls_and_tls_mappings() -> None:
    from fastsmtp.options import FALSE_WORDS, TRUE_WORDS, parse_bool

    for word in TRUE_WORDS | {w.upper() for w in TRUE_WORDS}:
        assert parse_bool("x", word) is True
        assert parse_url(f"smtp://mx.test/?pipelining={word}")["pipelining"] is True
        assert make_ssl_context({"verify": word}).verify_mode == ssl.CERT_REQUIRED
    for word in FALSE_WORDS | {w.upper() for w in FALSE_WORDS}:
        assert parse_bool("x", word) is False
        assert parse_url(f"smtp://mx.test/?pipelining={word}")["pipelining"] is False
        assert make_ssl_context({"verify": word}).verify_mode == ssl.CERT_NONE
        assert parse_url(f"smtp://mx.test/?tls.verify={word}")["tls"] == {"verify": False}
    for bad in ("maybe", "", 1, None):
        with pytest.raises(ValueError, match="must be a bool"):
            parse_bool("flag", bad)
    with pytest.raises(ValueError, match="pipelining must be a bool"):
        parse_url("smtp://mx.test/?pipelining=maybe")


def test_pool_options_live_in_options_and_pool_reexports_them() -> None:
    from fastsmtp import options, pool

    for name in ("PoolOptions", "Auth", "parse_url", "FAST_BATCH_SIZE"):
        assert getattr(pool, name) is getattr(options, name)
        assert name in pool.__all__ and name in options.__all__


# -- EHLO --------------------------------------------------------------------------------


def test_parse_ehlo() -> None:
    caps = parse_ehlo([
        "mx.test greets you", "PIPELINING", "SIZE 35882577", "auth=LOGIN", "AUTH PLAIN xoauth2",
        "8BITMIME", "SMTPUTF8", "DSN", "ENHANCEDSTATUSCODES", "CHUNKING", "STARTTLS",
    ])
    assert caps.greeting == "mx.test greets you"
    assert caps.size == 35882577 and caps.pipelining and caps.starttls
    assert caps.auth == {"LOGIN", "PLAIN", "XOAUTH2"}
    assert caps.eightbitmime and caps.smtputf8 and caps.dsn and caps.enhancedstatuscodes
    assert caps.chunking and "chunking" in caps


def test_parse_ehlo_size_variants() -> None:
    assert parse_ehlo(["x"]).size is None
    assert parse_ehlo(["x", "SIZE"]).size == 0
    assert parse_ehlo(["x", "SIZE nonsense"]).size == 0
    assert parse_ehlo(["x", "SIZE ²"]).size == 0
    assert parse_ehlo([]).greeting == ""


# -- SASL --------------------------------------------------------------------------------


def test_plain_and_xoauth2_initial_responses() -> None:
    assert Plain("u", "p").start() == b"AUTH PLAIN " + base64.b64encode(b"\0u\0p") + b"\r\n"
    raw = b"user=u@x\x01auth=Bearer tok\x01\x01"
    assert XOAuth2("u@x", "tok").start() == b"AUTH XOAUTH2 " + base64.b64encode(raw) + b"\r\n"
    mech = XOAuth2("u@x", "tok")
    assert mech.step(b'{"status":"400"}') == b"\r\n" and mech.error == b'{"status":"400"}'
    with pytest.raises(SMTPAuthError):
        mech.step(b"again")


def test_login_and_cram_md5_steps() -> None:
    login = Login("user", "pass\r\nQUIT")
    assert login.start() == b"AUTH LOGIN\r\n"
    assert login.step(b"Username:") == base64.b64encode(b"user") + b"\r\n"
    assert login.step(b"Password:") == base64.b64encode(b"pass\r\nQUIT") + b"\r\n"
    with pytest.raises(SMTPAuthError):
        login.step(b"more?")
    cram = CramMD5("tim", "tanstaaftanstaaf")
    challenge = b"<1896.697170952@postoffice.reston.mci.net>"
    digest = hmac.new(b"tanstaaftanstaaf", challenge, hashlib.md5).hexdigest()
    # RFC 2195's example answer.
    assert digest == "b913a602c7eda7a495b4e6e7334d3890"
    assert cram.step(challenge) == base64.b64encode(b"tim " + digest.encode()) + b"\r\n"


def test_decode_challenge() -> None:
    assert decode_challenge(b"VXNlcm5hbWU6") == b"Username:"
    with pytest.raises(SMTPAuthError):
        decode_challenge(b"not base64!")


def test_choose_mechanism() -> None:
    assert choose_mechanism({"LOGIN", "PLAIN", "CRAM-MD5"}) == "CRAM-MD5"
    assert choose_mechanism({"LOGIN", "PLAIN"}) == "PLAIN"
    assert choose_mechanism({"LOGIN"}) == "LOGIN"
    assert choose_mechanism({"LOGIN", "PLAIN"}, preferred="LOGIN") == "LOGIN"
    assert choose_mechanism({"XOAUTH2", "PLAIN"}, token=True) == "XOAUTH2"
    for offered, kwargs in [
        (set(), {}), ({"NTLM"}, {}), ({"PLAIN"}, {"preferred": "LOGIN"}),
        ({"PLAIN"}, {"token": True}), ({"XOAUTH2"}, {"preferred": "XOAUTH2"}),
    ]:
        with pytest.raises(SMTPAuthError):
            choose_mechanism(offered, **kwargs)


# -- envelopes and messages ------------------------------------------------------------


def test_envelope_normalization_and_validation() -> None:
    env = Envelope("", ["a@x", "b@x"])
    assert env.rcpt_to == ("a@x", "b@x") and env.mail_from == "" and not env.smtputf8
    assert Envelope("a@x", "b@x").rcpt_to == ("b@x",)
    assert Envelope("a@x", iter(["b@x"])).rcpt_to == ("b@x",)
    assert Envelope("ä@x", "b@x").smtputf8
    for bad in [dict(rcpt_to=()), dict(rcpt_to=[""]), dict(size=-1), dict(size=True),
                dict(mail_from=None), dict(dsn="FULL")]:
        kwargs = {"mail_from": "a@x", "rcpt_to": "b@x", **bad}
        with pytest.raises(SMTPEnvelopeError):
            Envelope(**kwargs)


def test_dsn() -> None:
    dsn = DSN(ret="full", envid="QQ 3+4=7", notify=["failure", "delay"], orcpt="rfc822;ü@x")
    assert dsn.mail_params() == " RET=FULL ENVID=QQ+203+2B4+3D7"
    assert dsn.rcpt_params() == " NOTIFY=FAILURE,DELAY ORCPT=rfc822;+C3+BC@x"
    assert DSN(notify="never").rcpt_params() == " NOTIFY=NEVER"
    for bad in [dict(ret="ALL"), dict(notify="NEVER,SUCCESS"), dict(notify="sometimes"),
                dict(notify=""), dict(envid="")]:
        with pytest.raises(SMTPEnvelopeError):
            DSN(**bad)


def test_dsn_orcpt_type_is_an_atom() -> None:
    assert DSN(orcpt="x-type;v 1").rcpt_params() == " ORCPT=x-type;v+201"
    assert DSN(orcpt="b@x").rcpt_params() == " ORCPT=rfc822;b@x"
    for bad in ("rfc822 NOTIFY=NEVER;z@z", ";z@z", "rfc 822;z@z", "rfc822;", "rfc822\r;z"):
        with pytest.raises(SMTPEnvelopeError):
            DSN(orcpt=bad)


@pytest.mark.parametrize(
    "address",
    ["a@x.test", "", '"john doe"@example.com', '"a\\"b c"@x.test', "ü@x.test",
     "a+tag@x.test", "@route,a@x.test"],
)
def test_path_error_accepts(address) -> None:
    assert path_error(address) is None


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("a@x.org> RET=FULL", "angle bracket"), ("<a@x.org>", "angle bracket"),
        ('"a>b"@x.test', "angle bracket"), ("a b@x.test", "whitespace"),
        ('"john doe"@x.test SIZE=1', "whitespace"), ('"open quote a@x.test', "whitespace"),
        ("a@x.test\u3000", "whitespace"), ("a@x\r\n.test", "control"),
        ("a\t@x.test", "control"), ("a@x.test\x7f", "control"), ("a@x\u2028", "control"),
    ],
)
def test_path_error_refuses(address, why) -> None:
    assert why in (path_error(address) or "")


@pytest.mark.parametrize(
    "data",
    [b"", b"x", b"x\r\n", b"a\nb", b"a\rb\r", b"\r\r\n", b".a\n..b", b"\n" * 10,
     bytearray(b"a\nb")],
)
def test_data_size_is_what_the_server_counts(data) -> None:
    # The encoder's output minus dot-stuffing and the final ".\r\n": RFC 1870's size.
    encoder = DataEncoder()
    wire = bytes(encoder.encode(bytes(data))) + bytes(encoder.end())
    stored = wire[:-3].replace(b"\r\n..", b"\r\n.")
    if stored.startswith(b".."):
        stored = stored[1:]
    assert data_size(data) == len(stored)
    assert data_size(memoryview(b"a\nb")) == len(b"a\r\nb\r\n")  # views are counted too


def test_xtext() -> None:
    plain = "abc-123"
    assert xtext(plain) is plain
    assert xtext("a+b=c") == "a+2Bb+3Dc"
    for bad in ("a\rb", "a\nb", "\x00", "\x7f", "\x85"):
        with pytest.raises(SMTPEnvelopeError):
            xtext(bad)


def test_envelope_from_message_sender_wins_and_dedup() -> None:
    msg = EmailMessage()
    msg["From"] = "a@x.test"
    msg["Sender"] = "Secretary <s@x.test>"
    msg["To"] = "b@x.test, c@x.test"
    msg["Cc"] = "b@x.test"
    env = envelope_from_message(msg)
    assert env.mail_from == "s@x.test" and env.rcpt_to == ("b@x.test", "c@x.test")
    with pytest.raises(SMTPEnvelopeError):
        envelope_from_message(EmailMessage())


def test_message_payload_kinds() -> None:
    data = b"x\r\n"
    assert message_payload(data) is data
    assert message_payload("é") == "é".encode()
    chunks = list(message_payload(io.BytesIO(b"a" * 70000)))  # type: ignore[arg-type]
    assert [len(c) for c in chunks] == [65536, 4464]
    with pytest.raises(TypeError):
        list(message_payload(io.StringIO("text")))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        message_payload(42)  # type: ignore[arg-type]
    msg = EmailMessage()
    msg["Bcc"] = "hidden@x.test"
    msg.set_content("hi")
    out = message_payload(msg)
    assert b"Bcc" not in out and b"\r\n" in out and msg["Bcc"] == "hidden@x.test"


def test_reply_code_enum() -> None:
    from fastsmtp import ReplyCode
    from fastsmtp.reply import Reply

    assert ReplyCode(250) is ReplyCode.OK
    assert Reply(354, ("go ahead",)).code == ReplyCode.START_DATA
    assert ReplyCode.UNAVAILABLE == 421 and ReplyCode.AUTH_REQUIRED == 530
    assert all(200 <= code < 600 for code in ReplyCode)
