"""``fastsmtp demo`` end to end: a real child server process, a pool, verification."""

from __future__ import annotations

import subprocess
import sys

from support.env import child_env

from fastsmtp.cli.demo import DemoReport, body_checksum


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fastsmtp", "demo", *args],
                          capture_output=True, text=True, env=child_env(), timeout=120)


def test_demo_sends_verifies_and_summarizes():
    done = run_demo("--messages", "500", "--connections", "3", "--max-messages", "120")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "500 accepted, 0 failed" in out
    assert "500 received, checksum OK" in out
    assert "msgs/s" in out and "us per message" in out
    assert "core=" in out and "loop=" in out
    assert "every message arrived exactly once" in out
    # The pool's final stats, one line (no rate limit: none shown).
    (pool_line,) = [line for line in out.splitlines() if line.startswith("pool ")]
    assert pool_line.split(None, 1)[1].startswith(
        "sent=500 refused=0 failed=0 maybe_delivered=0 retried=0 connections=0 busy=0 idle=0 "
        "queued=0 retrying=0 in_flight=0")
    assert "rate_limit" not in pool_line
    assert "500/500 sent" in done.stderr  # the progress line's final state


def test_demo_on_asyncio_loop():
    done = run_demo("-n", "50", "--no-uvloop", "--quiet")
    assert done.returncode == 0, done.stderr
    assert "loop=asyncio" in done.stdout
    assert done.stderr == ""


def test_demo_rejects_bad_arguments():
    done = run_demo("--messages", "0")
    assert done.returncode == 2
    assert "must be >= 1" in done.stderr


def test_report_is_not_ok_when_anything_is_missing_or_changed():
    base = dict(messages=3, accepted=3, failed=0, server_count=3,
                server_checksum=7, client_checksum=7)
    assert DemoReport(**base).ok
    assert not DemoReport(**{**base, "server_count": 2}).ok  # lost on the way
    assert not DemoReport(**{**base, "server_count": 4}).ok  # delivered twice
    assert not DemoReport(**{**base, "server_checksum": 8}).ok  # altered
    assert not DemoReport(**{**base, "accepted": 2, "failed": 1}).ok
    assert body_checksum(b"a") != body_checksum(b"b")
