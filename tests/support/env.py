"""External programs: peer programs (smtp-sink, swaks) and ``python -m fastsmtp`` children."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from collections.abc import AsyncIterator, Callable, Sequence

import pytest

from .ports import PortInUse, retry_port_in_use

__all__ = ["child_env", "listening_program", "require_peer"]

#: Seconds a peer program gets to start listening.
PROGRAM_START = 10.0


def require_peer(program: str) -> str:
    """Return the path of an external peer program, or skip the test without it.

    With ``FASTSMTP_REQUIRE_PEERS=1`` (CI) a missing peer fails the test instead: CI must
    never pass by skipping the interop tests.
    """
    path = shutil.which(program) or shutil.which(program, path="/usr/sbin:/usr/bin")
    if path is None:
        message = f"{program} is not installed (apt-get install postfix swaks / npm)"
        if os.environ.get("FASTSMTP_REQUIRE_PEERS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


def child_env(**extra: str) -> dict[str, str]:
    """Environment for a ``python -m fastsmtp`` child that imports *this* fastsmtp.

    The child gets the directory the tests imported fastsmtp from at the front of its
    PYTHONPATH: ``src/`` in a development checkout run with ``PYTHONPATH=src``, the
    virtualenv's site-packages (with the compiled core) under ``make test``. Pointing it
    at ``src/`` unconditionally would load a tree without the compiled core in CI.
    """
    import fastsmtp

    package_root = os.path.dirname(os.path.dirname(os.path.abspath(fastsmtp.__file__)))
    path = os.environ.get("PYTHONPATH", "")
    return dict(os.environ, PYTHONPATH=package_root + (os.pathsep + path if path else ""),
                **extra)


def _greets(port: int) -> bool:
    """Whether something on ``port`` accepts and sends an SMTP greeting (``220``)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
            return probe.recv(4).startswith(b"220")
    except OSError:
        return False


def _start(argv: Sequence[str], port: int) -> subprocess.Popen[bytes]:
    """Start ``argv`` and wait until it greets on ``port``; PortInUse if it could not bind.

    Ready means greeted *and* still running: should another process hold the port, the
    probe may reach that one, but our program then exits with its bind error.
    """
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=errors)
        deadline = time.monotonic() + PROGRAM_START
        while True:
            greeted = _greets(port)
            if proc.poll() is not None:
                errors.seek(0)
                said = errors.read().decode(errors="replace")
                if "in use" in said.lower():
                    raise PortInUse(port)
                raise AssertionError(f"{argv[0]} exited with {proc.returncode}: {said}")
            if greeted:
                return proc
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise AssertionError(f"{argv[0]} did not greet on port {port} in time")
            # Polling the program's port is the only readiness signal it gives.
            time.sleep(0.02)


@contextlib.asynccontextmanager
async def listening_program(argv: Callable[[int], Sequence[str]]) -> AsyncIterator[int]:
    """Run the peer program ``argv(port)`` until the block ends; yield its port.

    For SMTP peer programs that must be given a port number (Postfix's ``smtp-sink``);
    ready once it sends its ``220`` greeting. The port is
    picked free and, if the program finds it taken after all, picked again (see
    :func:`support.ports.retry_port_in_use`).
    """

    async def start(port: int) -> tuple[subprocess.Popen[bytes], int]:
        return _start(argv(port), port), port

    proc, port = await retry_port_in_use(start)
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def readme_path() -> Path:
    """The project's README.md: the tests' folder sits beside it (tests/support/env.py)."""
    return Path(__file__).resolve().parents[2] / "README.md"
