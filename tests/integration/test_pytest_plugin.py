"""The pytest plugin (fastsmtp.testing): its smtp_server fixture, run by a real pytest.

A test file using the fixture (sync with smtplib, async with fastsmtp, AUTH, STARTTLS,
implicit TLS, the marker's options) runs in a pytest subprocess through ``pytester``; the
plugin is loaded with ``-p fastsmtp.testing``, since its ``pytest11`` entry point exists only
once the distribution is installed (checked separately, when it is).
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
import sysconfig
from pathlib import Path

import pytest

import fastsmtp

pytest_plugins = ["pytester"]

SRC = Path(fastsmtp.__file__).resolve().parent.parent

INNER = '''
import smtplib
import ssl

import pytest

from fastsmtp import SMTPPool
from fastsmtp.handlers import ReceivedMessage
from email.message import EmailMessage


def _message(subject="hello"):
    msg = EmailMessage()
    msg["From"] = "Me <me@example.com>"
    msg["To"] = "you@example.org"
    msg["Subject"] = subject
    msg.set_content("body text")
    return msg


def test_sync_smtplib(smtp_server):
    assert smtp_server.host == "127.0.0.1" and smtp_server.port > 0
    assert smtp_server.tls_context is None and smtp_server.cafile is None
    with smtplib.SMTP(smtp_server.host, smtp_server.port) as client:
        client.sendmail("me@example.com", ["you@example.org", "other@example.org"],
                        b"Subject: sync\\r\\n\\r\\nline\\r\\n")
    (received,) = smtp_server.messages
    assert isinstance(received, ReceivedMessage)
    assert received.mail_from == "me@example.com"
    assert received.rcpt_tos == ["you@example.org", "other@example.org"]
    assert received.content == b"Subject: sync\\r\\n\\r\\nline\\r\\n"
    assert received.message["Subject"] == "sync"
    smtp_server.clear()
    assert smtp_server.messages == []


def test_each_test_gets_a_fresh_server(smtp_server):
    assert smtp_server.messages == []


@pytest.mark.asyncio
async def test_async_fastsmtp(smtp_server):
    async with SMTPPool(host=smtp_server.host, port=smtp_server.port, ignore_tls=True) as pool:
        await pool.send(_message("async one"))
        await pool.send(_message("async two"))
    assert [m.message["Subject"] for m in smtp_server.messages] == ["async one", "async two"]
    assert smtp_server.messages[0].message["From"].addresses[0].display_name == "Me"


@pytest.mark.smtp_server(require_auth=True, users={"u": "p"})
def test_auth_required(smtp_server):
    with smtplib.SMTP(smtp_server.host, smtp_server.port) as client:
        with pytest.raises(smtplib.SMTPSenderRefused):
            client.sendmail("me@example.com", ["you@example.org"], b"Subject: x\\r\\n\\r\\nx\\r\\n")
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login("u", "wrong")
        client.login("u", "p")
        client.sendmail("me@example.com", ["you@example.org"], b"Subject: x\\r\\n\\r\\nx\\r\\n")
    (received,) = smtp_server.messages
    assert received.login == "u"


@pytest.mark.smtp_server(tls=True, users={"u": "p"}, require_auth=True, auth_require_tls=True)
def test_starttls(smtp_server):
    assert isinstance(smtp_server.tls_context, ssl.SSLContext)
    with smtplib.SMTP(smtp_server.host, smtp_server.port) as client:
        client.ehlo()
        assert not client.has_extn("auth")  # AUTH only once TLS is up, as asked
        client.starttls(context=ssl.create_default_context(cafile=smtp_server.cafile))
        client.login("u", "p")
        client.send_message(_message("over tls"))
    (received,) = smtp_server.messages
    assert received.tls and received.login == "u"


@pytest.mark.smtp_server(secure=True)
@pytest.mark.asyncio
async def test_implicit_tls_async(smtp_server):
    async with SMTPPool(host=smtp_server.host, port=smtp_server.port, secure=True,
                        tls=smtp_server.tls_context) as pool:
        await pool.send(_message("implicit"))
    assert smtp_server.messages[0].tls


@pytest.mark.smtp_server(max_size=100)
def test_other_server_options(smtp_server):
    with smtplib.SMTP(smtp_server.host, smtp_server.port) as client:
        with pytest.raises(smtplib.SMTPSenderRefused):
            client.sendmail("me@example.com", ["you@example.org"], b"x" * 500, ["SIZE=500"])
    assert smtp_server.messages == []
'''


def _load_plugin() -> tuple[str, ...]:
    """``-p fastsmtp.testing`` unless the installed entry point loads it already (pytest
    refuses the same plugin twice): installed, the fixture must work without it."""
    installed = any(e.value == "fastsmtp.testing"
                    for e in importlib.metadata.entry_points(group="pytest11"))
    return () if installed else ("-p", "fastsmtp.testing")


@pytest.fixture
def child_pythonpath(monkeypatch: pytest.MonkeyPatch) -> None:
    # The child pytest runs in a temporary directory: give it this source tree.
    path = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", str(SRC) + (os.pathsep + path if path else ""))


def test_smtp_server_fixture_in_a_real_pytest(pytester: pytest.Pytester,
                                              child_pythonpath: None) -> None:
    pytest.importorskip("trustme")
    pytest.importorskip("pytest_asyncio")
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest_subprocess(
        *_load_plugin(), "-p", "no:cacheprovider", "--strict-markers",
        "-W", "error::pytest.PytestUnraisableExceptionWarning")
    result.assert_outcomes(passed=7)


def test_marker_is_registered(pytester: pytest.Pytester, child_pythonpath: None) -> None:
    result = pytester.runpytest_subprocess(*_load_plugin(), "--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.smtp_server(*fastsmtp.testing*"])


def test_marker_takes_keywords_only_and_unknown_options_fail(pytester: pytest.Pytester,
                                                             child_pythonpath: None) -> None:
    pytester.makepyfile(test_bad='''
import pytest

@pytest.mark.smtp_server(True)
def test_positional(smtp_server):
    pass

@pytest.mark.smtp_server(no_such_option=1)
def test_unknown(smtp_server):
    pass
''')
    result = pytester.runpytest_subprocess(*_load_plugin(), "-p", "no:cacheprovider")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*keyword options only*", "*no_such_option*"])


def test_tls_without_trustme_says_what_to_install(pytester: pytest.Pytester,
                                                  child_pythonpath: None) -> None:
    # A conftest that hides trustme, as on a machine without it.
    pytester.makeconftest("import sys\nsys.modules['trustme'] = None\n")
    pytester.makepyfile(test_tls='''
import pytest

@pytest.mark.smtp_server(tls=True)
def test_tls(smtp_server):
    pass
''')
    result = pytester.runpytest_subprocess(*_load_plugin(), "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*needs the trustme package*pip install trustme*"])


def test_pyproject_declares_the_entry_point() -> None:
    pyproject = SRC.parent / "pyproject.toml"
    if not pyproject.exists():
        pytest.skip("not a source checkout")
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    assert project["entry-points"]["pytest11"] == {"fastsmtp": "fastsmtp.testing"}


def test_installed_distribution_registers_the_plugin() -> None:
    try:
        dist = importlib.metadata.distribution("aiofastsmtp")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("aiofastsmtp is not installed (tests run from the source tree)")
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    where = Path(str(dist.locate_file(""))).resolve()
    if not (where == site or site in where.parents):
        pytest.skip(f"aiofastsmtp is not installed in {site} ({sys.prefix})")
    plugins = {e.name: e.value for e in dist.entry_points if e.group == "pytest11"}
    assert plugins == {"fastsmtp": "fastsmtp.testing"}
