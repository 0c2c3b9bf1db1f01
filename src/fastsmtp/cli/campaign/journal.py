"""The campaign's journal: who was sent what, durable in SQLite (WAL, synchronous=FULL).

A recipient is recorded as ``sending`` and *committed* before its message is handed to the
pool, and its outcome is recorded after (:mod:`.outcome` decides which recipients are sent
in a resumed run).

Durability: ``PRAGMA synchronous=FULL`` with WAL fsyncs the log at every commit.
``NORMAL`` would survive a process crash but not a power loss, and a lost ``sending``
mark after a power loss means the message goes out a second time on resume, which is the
one thing the journal exists to prevent. The fsync cost is amortized by *group commit*:
``sending`` marks are written in batches (:data:`~.run.MARK_BATCH` rows, one commit), and
the outcomes collected since the last commit ride in the same transaction. Progress and
the summary count an outcome only after its commit, so nothing is claimed before it is
durable. Outcomes not committed at a crash (at most :data:`~.run.FLUSH_INTERVAL` seconds'
worth) leave their rows ``sending``, i.e. uncertain: after a hard crash at most about
``window + MARK_BATCH`` recipients are reported uncertain, never resent silently.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .errors import CampaignInputError

__all__ = ["Journal", "remove_journal", "check_destination"]

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS recipients (
    key TEXT PRIMARY KEY,       -- the casefolded address
    email TEXT NOT NULL,
    line INTEGER NOT NULL,
    status TEXT NOT NULL,
    code INTEGER,
    reply TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    updated REAL NOT NULL
) WITHOUT ROWID;
"""


class Journal:
    """The campaign's durable record of who was sent what (SQLite, WAL, synchronous=FULL).

    Writes are grouped: :meth:`mark_sending` commits at once (together with every outcome
    recorded so far); :meth:`record` only buffers and :meth:`flush` commits. Use
    :attr:`committed` to learn which outcomes are durable.

    Args:
        path: The database file.
        create: Create it (it must not exist) instead of opening an existing one.

    Raises:
        CampaignInputError: ``create`` and it exists, or not ``create`` and it is missing.
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool) -> None:
        self.path = os.fspath(path)
        exists = os.path.exists(self.path)
        if create and exists:
            raise CampaignInputError(f"the journal {self.path} already exists")
        if not create and not exists:
            raise CampaignInputError(f"no journal at {self.path}: nothing to resume")
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT).
        self._db = sqlite3.connect(self.path, isolation_level=None)
        mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            log.warning("journal %s: WAL not available (journal_mode=%s)", self.path, mode)
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._pending: list[tuple[str, int | None, str, float, str]] = []
        self._reset: list[str] = []
        #: Outcomes made durable by the last commit: ``(key, status)``; the caller drains it.
        self.committed: list[tuple[str, str]] = []
        self.last_flush = time.monotonic()

    # -- metadata ----------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        """A campaign setting stored at creation (e.g. ``destination``)."""
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, values: Mapping[str, str]) -> None:
        """Store campaign settings (committed at once)."""
        with self._transaction():
            self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", values.items())

    # -- reads -------------------------------------------------------------------------------

    def status(self, key: str) -> str | None:
        """The recipient's recorded status, None when never attempted."""
        row = self._db.execute("SELECT status FROM recipients WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def entry(self, key: str) -> tuple[str, int | None, str | None] | None:
        """``(status, code, reply)`` of a recipient, None when never attempted."""
        row = self._db.execute(
            "SELECT status, code, reply FROM recipients WHERE key = ?", (key,)
        ).fetchone()
        return None if row is None else (row[0], row[1], row[2])

    def counts(self) -> dict[str, int]:
        """Recipients per status."""
        return dict(self._db.execute("SELECT status, count(*) FROM recipients GROUP BY status"))

    def uncertain(self) -> list[tuple[str, int, str]]:
        """``(email, line, status)`` of every recipient whose delivery is unknown."""
        return [tuple(r) for r in self._db.execute(
            "SELECT email, line, status FROM recipients "
            "WHERE status IN ('sending', 'maybe-delivered') ORDER BY line")]

    # -- writes ------------------------------------------------------------------------------

    def _transaction(self) -> Any:
        db = self._db

        class _Tx:
            def __enter__(self) -> None:
                db.execute("BEGIN IMMEDIATE")

            def __exit__(self, exc_type: Any, *rest: Any) -> None:
                db.execute("COMMIT" if exc_type is None else "ROLLBACK")

        return _Tx()

    def mark_sending(self, rows: Iterable[tuple[str, str, int]]) -> None:
        """Record ``(key, email, line)`` rows as ``sending`` and commit (with any outcomes).

        Raises:
            RuntimeError: A row is already ``accepted`` (a resend that must not happen).
        """
        now = time.time()
        rows = list(rows)
        with self._transaction():
            self._write_outcomes()
            before = self._db.total_changes
            # The WHERE makes a 250 impossible to overwrite, whatever the caller does.
            self._db.executemany(
                "INSERT INTO recipients (key, email, line, status, attempts, updated) "
                "VALUES (?, ?, ?, 'sending', 1, ?) ON CONFLICT (key) DO UPDATE SET "
                "status = 'sending', attempts = attempts + 1, updated = excluded.updated "
                "WHERE status != 'accepted'",
                [(key, address, line, now) for key, address, line in rows],
            )
            if self._db.total_changes - before != len(rows):
                raise RuntimeError("refusing to send again to an accepted recipient")
        self._committed()

    def record(self, key: str, status: str, code: int | None, reply: str) -> None:
        """Buffer the outcome of a ``sending`` recipient (durable after :meth:`flush`)."""
        if status == "pending":
            self._reset.append(key)
        else:
            self._pending.append((status, code, reply, time.time(), key))

    def reset(self, keys: Iterable[str]) -> None:
        """Buffer: these ``sending`` rows were never handed to the server (back to pending)."""
        self._reset.extend(keys)

    @property
    def buffered(self) -> int:
        """Outcomes waiting for their commit."""
        return len(self._pending) + len(self._reset)

    def flush(self) -> None:
        """Commit the buffered outcomes (one fsync)."""
        if self.buffered:
            with self._transaction():
                self._write_outcomes()
            self._committed()
        self.last_flush = time.monotonic()

    def _write_outcomes(self) -> None:
        # Only a 'sending' row takes an outcome: an outcome can never undo a 250.
        self._db.executemany(
            "UPDATE recipients SET status = ?, code = ?, reply = ?, updated = ? "
            "WHERE key = ? AND status = 'sending'",
            self._pending,
        )
        self._db.executemany(
            "UPDATE recipients SET status = 'pending', attempts = attempts - 1 "
            "WHERE key = ? AND status = 'sending'",
            [(key,) for key in self._reset],
        )

    def _committed(self) -> None:
        self.committed.extend((p[4], p[0]) for p in self._pending)
        self.committed.extend((key, "pending") for key in self._reset)
        self._pending.clear()
        self._reset.clear()
        self.last_flush = time.monotonic()

    def close(self) -> None:
        """Commit what is buffered and close the database."""
        try:
            self.flush()
        finally:
            self._db.close()


def remove_journal(path: str) -> None:
    """Delete a journal database and its WAL files (``--restart``)."""
    for suffix in ("", "-wal", "-shm"):
        try:
            os.unlink(path + suffix)
        except FileNotFoundError:
            pass


#: Journal meta key set when a run stopped because the server's replies showed the
#: settings were wrong (see run.py): the next run may use other settings.
SETTINGS_REFUSED = "settings_refused"


def check_destination(path: str, destination: str) -> None:
    """Refuse to resume a campaign against another server than the one it started with.

    The login (``... as user``) may change: the user is a setting, not the destination.
    After a run stopped on a configuration error (:data:`SETTINGS_REFUSED`), the server
    may change too: fixing the URL is what that stop asked for.
    """
    try:
        db = sqlite3.connect(f"file:{Path(path).absolute().as_posix()}?mode=ro", uri=True)
        try:
            row = db.execute("SELECT value FROM meta WHERE key = 'destination'").fetchone()
            refused = db.execute("SELECT value FROM meta WHERE key = ?",
                                 (SETTINGS_REFUSED,)).fetchone()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise CampaignInputError(f"cannot read the journal {path}: {exc}") from None
    if refused is not None and refused[0] == "1":
        return
    if row is not None and row[0].split(" as ")[0] != destination.split(" as ")[0]:
        raise CampaignInputError(
            f"the journal {path} belongs to a campaign sent to {row[0]}, not {destination}")
