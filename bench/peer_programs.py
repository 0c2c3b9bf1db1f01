"""Peer programs for the benchmarks: Postfix's ``smtp-sink`` and ``smtp-source``.

Shared by ``bench_server.py`` and ``bench_pool.py``. (Not named ``peers.py``: the tests'
``tests/peers.py`` is imported as the top-level module ``peers``, and one pytest run over
both folders would mix the two up.)

* :func:`program` finds a program on PATH or in ``/usr/sbin``;
* :func:`smtp_sink` runs ``smtp-sink`` on a free loopback port for the length of a
  ``with`` block (as ``-u nobody`` when run as root; never the Postfix daemon);
* :func:`start_listening` does the same for any server command given its port;
* :func:`run_source` runs ``smtp-source`` to completion, bounded in time;
* :func:`require` skips a pytest test when a program is missing, or fails it when
  ``FASTSMTP_REQUIRE_PEERS=1`` (CI).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

#: Seconds a server gets to accept its first connection.
READY_TIMEOUT = 20.0
#: Seconds any single smtp-source run may take.
SOURCE_TIMEOUT = 600.0


def program(name: str) -> str | None:
    """Path of ``name`` on PATH or in /usr/sbin (Postfix's tools live there), or None."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")


def require(*names: str) -> None:
    """Inside a pytest test: skip it when a program is missing (fail it in CI).

    ``FASTSMTP_REQUIRE_PEERS=1`` turns the skip into a failure, so CI cannot pass by
    silently skipping every benchmark.
    """
    import pytest

    for name in names:
        if program(name) is None:
            if os.environ.get("FASTSMTP_REQUIRE_PEERS") == "1":
                pytest.fail(f"{name} is not installed")
            pytest.skip(f"{name} is not installed")


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    """Wait until something on ``port`` sends a greeting (``proc`` must stay alive)."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.recv(512)  # the greeting
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port}")


@contextmanager
def start_listening(
    cmd: Sequence[str], port: int, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server command that listens on ``port``; stop it when the block ends."""
    proc = subprocess.Popen(list(cmd), env=env, stdout=subprocess.DEVNULL)
    try:
        wait_listening(port, proc)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def sink_command(port: int) -> list[str]:
    """The ``smtp-sink`` command line for 127.0.0.1:``port`` (backlog 1024)."""
    path = program("smtp-sink")
    if path is None:
        raise FileNotFoundError("smtp-sink is not installed")
    cmd = [path]
    if os.geteuid() == 0:
        cmd += ["-u", "nobody"]  # smtp-sink refuses to run as root without it
    return cmd + [f"127.0.0.1:{port}", "1024"]


@contextmanager
def smtp_sink() -> Iterator[int]:
    """Run Postfix's ``smtp-sink`` on a free loopback port; yield the port; stop it."""
    port = free_port()
    with start_listening(sink_command(port), port):
        yield port


def source_command(
    port: int, messages: int, size: int, sessions: int, *, keep_open: bool = False
) -> list[str]:
    """The ``smtp-source`` command line.

    Args:
        port: The sink's port on 127.0.0.1.
        messages: Messages in all (``-m``).
        size: Body length in bytes (``-l``).
        sessions: Parallel sessions (``-s``).
        keep_open: Send every message of a session over one connection (``-d``) instead
            of one connection per message (smtp-source's default).
    """
    path = program("smtp-source")
    if path is None:
        raise FileNotFoundError("smtp-source is not installed")
    cmd = [path, "-s", str(sessions), "-m", str(messages), "-l", str(size)]
    if keep_open:
        cmd.append("-d")
    return cmd + ["-f", "a@example.org", "-t", "b@example.org", f"127.0.0.1:{port}"]


def run_source(
    port: int, messages: int, size: int, sessions: int = 8, *, keep_open: bool = False
) -> float:
    """Send ``messages`` of ``size`` bytes with smtp-source; return messages per second."""
    cmd = source_command(port, messages, size, sessions, keep_open=keep_open)
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, timeout=SOURCE_TIMEOUT)
    elapsed = time.perf_counter() - start
    if done.returncode != 0 or done.stderr.strip():
        raise RuntimeError(f"smtp-source failed: {done.stderr.decode(errors='replace')}")
    return messages / elapsed


SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")


def package_root() -> str:
    """The directory fastsmtp is imported from: an installed build, else ``src/``.

    Benchmarks must measure the build that is installed (with its compiled core), not a
    source tree that may have none; ``src/`` is only the fallback for a checkout that was
    never installed.
    """
    try:
        import fastsmtp
    except ImportError:
        return SRC
    return os.path.dirname(os.path.dirname(os.path.abspath(fastsmtp.__file__)))


def child_env() -> dict[str, str]:
    """Environment for a benchmark child process: it imports the same fastsmtp as we do."""
    path = os.environ.get("PYTHONPATH", "")
    return dict(os.environ, PYTHONPATH=package_root() + (os.pathsep + path if path else ""))
