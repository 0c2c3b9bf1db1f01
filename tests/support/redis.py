"""A real Redis server (Debian's ``redis-server``) for a test, and Celery worker processes.

:class:`RedisServer` runs ``redis-server`` on 127.0.0.1 with a free port and a temporary
directory, persistence chosen by the test (``appendonly yes`` to survive a restart), and
stops it by its PID. :class:`CeleryWorker` runs ``python -m celery -A fastsmtp.celery
worker`` as a subprocess (the ready app, configured through ``FASTSMTP_*``), bounded in
time and killed by its PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from .env import child_env
from .ports import _unused_port

__all__ = ["RedisServer", "CeleryWorker", "require_redis", "START_TIMEOUT"]

#: Seconds a redis-server or a Celery worker gets to become ready.
START_TIMEOUT = 30.0


def require_redis() -> str:
    """The redis-server program, or skip (fail with ``FASTSMTP_REQUIRE_PEERS=1``)."""
    path = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/bin")
    if path is None:
        message = "redis-server is not installed (apt-get install redis-server)"
        if os.environ.get("FASTSMTP_REQUIRE_PEERS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    try:
        import celery  # noqa: F401
        import redis  # noqa: F401
    except ImportError:
        pytest.skip("the celery extra is not installed (pip install fastsmtp[celery])")
    return path


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
            probe.sendall(b"PING\r\n")
            return probe.recv(7).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """``redis-server`` on 127.0.0.1 in a temporary directory; stopped by its PID.

    Args:
        directory: Where its files go (the AOF); a new temporary one by default.
        appendonly: Persistence on (``appendonly yes``, ``appendfsync always``).
    """

    def __init__(self, directory: str | None = None, appendonly: bool = False) -> None:
        self.program = require_redis()
        self._own_dir = directory is None
        self.directory = directory or tempfile.mkdtemp(prefix="fastsmtp-redis-")
        self.appendonly = appendonly
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (again: same port and directory, so the AOF is read back)."""
        for _attempt in range(5):
            port = self.port or _unused_port()
            argv = [self.program, "--port", str(port), "--bind", "127.0.0.1",
                    "--dir", self.directory, "--save", "", "--daemonize", "no",
                    "--protected-mode", "yes", "--logfile", "redis.log",
                    "--appendonly", "yes" if self.appendonly else "no",
                    "--appendfsync", "always"]
            self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline and self.proc.poll() is None:
                if _ping(port):
                    self.port = port
                    return
                time.sleep(0.02)  # redis-server gives no readiness signal but its port
            log = Path(self.directory, "redis.log")
            said = log.read_text(errors="replace") if log.exists() else ""
            self.stop()
            if "in use" not in said.lower() or self.port:
                raise AssertionError(f"redis-server did not start on port {port}: {said[-2000:]}")
        raise AssertionError("redis-server found no free port in 5 tries")

    def stop(self) -> None:
        """SIGTERM (Redis flushes its AOF and exits), then wait; SIGKILL if it hangs."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def close(self) -> None:
        """Stop and remove the temporary directory."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CeleryWorker:
    """A Celery worker subprocess on the ready app (prefork, one child by default).

    Args:
        env: ``FASTSMTP_*`` settings (broker, SMTP URL, rate limit...).
        name: The worker's node name (unique per test).
        concurrency: Child processes.
        log: Where its output goes (read it when a test fails).
        extra: More ``celery worker`` arguments.
        argv: Another command instead (``python -m fastsmtp worker ...``).
    """

    def __init__(self, env: dict[str, str], name: str, log: Path, concurrency: int = 1,
                 queue: str = "fastsmtp", extra: Sequence[str] = (),
                 argv: Sequence[str] | None = None) -> None:
        self.env = child_env(**env)
        self.name = name
        self.log_path = log
        if argv is None:
            argv = [sys.executable, "-m", "celery", "-A", "fastsmtp.celery", "worker",
                    "--pool=prefork", f"--concurrency={concurrency}", "-Q", queue,
                    "-n", f"{name}@%h", "--without-gossip", "--without-mingle",
                    "--without-heartbeat", "--loglevel=INFO", *extra]
        self._log = open(log, "wb")
        self.proc = subprocess.Popen(argv, env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def log(self) -> str:
        """What the worker printed so far."""
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Until the worker says it is ready (its own log line: Celery's only signal)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "ready." in self.log():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"worker {self.name} exited: {self.log()[-3000:]}")
            time.sleep(0.05)
        raise AssertionError(f"worker {self.name} not ready in {timeout} s: {self.log()[-3000:]}")

    def children(self) -> list[int]:
        """PIDs of the worker's pool processes (from /proc)."""
        out = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                    out.append(int(entry.name))
        return out

    def kill(self) -> None:
        """SIGKILL the worker and its children, by PID (the kill -9 of the tests)."""
        for pid in [self.proc.pid, *self.children()]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(10)

    def stop(self, timeout: float = 30.0) -> None:
        """Warm shutdown (SIGTERM: running tasks finish, the pool closes); kill if it hangs."""
        if self.proc.poll() is None:
            kids = self.children()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
            for pid in kids:  # orphans of a killed main process
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self._log.close()
