"""``fastsmtp --version`` and ``fastsmtp info``, run as a user runs them (a child process)."""

from __future__ import annotations

import subprocess
import sys

from support.env import child_env

import fastsmtp


def _fastsmtp(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fastsmtp", *args], env=child_env(),
                          capture_output=True, text=True, timeout=60)


def test_version() -> None:
    done = _fastsmtp("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"fastsmtp {fastsmtp.__version__}"


def test_info_names_the_core_and_the_loop() -> None:
    done = _fastsmtp("info")
    assert done.returncode == 0, done.stderr
    facts = dict(line.split(": ", 1) for line in done.stdout.splitlines())
    assert facts["fastsmtp"] == fastsmtp.__version__
    assert facts["core"].split()[0] == fastsmtp.IMPLEMENTATION
    if fastsmtp.IMPLEMENTATION == "python":
        assert "compiled core is not in use" in facts["core"]
    try:
        import uvloop  # noqa: F401
    except ImportError:
        assert facts["event loop"] == "asyncio"
    else:
        assert facts["event loop"] == "uvloop"
