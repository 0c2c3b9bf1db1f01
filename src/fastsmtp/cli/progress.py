"""The one progress display of the applications (``fastsmtp demo`` and ``fastsmtp send``).

A line redrawn in place on a terminal, or a line every :data:`LINE_INTERVAL` seconds when
the stream is not a terminal (a log file or a pipe should not fill up). The caller reports
each message's status change with :meth:`Progress.moved`, which is only a few dict
operations (it runs per message); the drawing happens on a timer (:meth:`Progress.run`),
never per message.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Mapping
from typing import TextIO

__all__ = ["Progress", "STATUSES", "TTY_INTERVAL", "LINE_INTERVAL", "POLL_INTERVAL",
           "stats_line"]

#: Redraw period on a terminal.
TTY_INTERVAL = 0.1
#: Period of the printed lines when the stream is not a terminal.
LINE_INTERVAL = 5.0
#: Wake-up period of :meth:`Progress.run` when the stream is not a terminal: short enough
#: for the campaign's per-tick work (committing its journal), a line is still printed
#: only every :data:`LINE_INTERVAL`.
POLL_INTERVAL = 1.0

#: Statuses of a message (the campaign's journal statuses; the demo uses ``accepted`` and
#: ``failed``). ``pending`` is also what the results file says of a recipient that was
#: never attempted.
STATUSES = ("pending", "sending", "accepted", "rejected", "deferred", "maybe-delivered", "failed")


def stats_line(stats: Mapping[str, object]) -> str:
    """A pool's :meth:`~fastsmtp.pool.SMTPPool.stats` on one line: ``key=value`` pairs in
    the pool's order, the unset ones (None, e.g. no rate limit) left out, so that keys the
    pool gains later show up without a change here."""
    return " ".join(f"{key}={value}" for key, value in stats.items() if value is not None)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """A progress display on a stream: a redrawn line on a terminal, periodic lines otherwise.

    Counts cover the whole job (a resumed campaign's earlier runs included); the rate and
    ETA are this run's.

    Args:
        total: Messages in the job (the campaign's unique recipients).
        counts: Messages per status (:data:`STATUSES`) at the start; default none.
        stream: Where to write; default ``sys.stderr``.
        tty: Redraw in place with ``\\r``; default: ``stream.isatty()``.
    """

    def __init__(self, total: int, counts: Mapping[str, int] | None = None,
                 stream: TextIO | None = None, tty: bool | None = None) -> None:
        self.total = total
        counts = counts or {}
        self.counts = {s: counts.get(s, 0) for s in STATUSES}
        # Rows left 'sending' by a crash are uncertain, unlike the ones this run marks.
        self.stale = self.counts["sending"]
        self.counts["sending"] = 0
        # Looked up now, not at import: sys.stderr may have been replaced since.
        self.stream = sys.stderr if stream is None else stream
        self.tty = self.stream.isatty() if tty is None else tty
        self.started = time.monotonic()
        self.done_this_run = 0
        self._width = 0
        self._last_line = 0.0

    def moved(self, old: str | None, new: str) -> None:
        """A recipient went from status ``old`` (None: not in the journal) to ``new``."""
        if old == "sending" and new == "sending":  # a stale row resent (--resend-uncertain)
            self.stale -= 1
            self.counts["sending"] += 1
            return
        if old is not None:
            self.counts[old] -= 1
        self.counts[new] += 1
        if new not in ("pending", "sending"):
            self.done_this_run += 1

    def line(self) -> str:
        """The progress text."""
        c = self.counts
        uncertain = c["maybe-delivered"] + self.stale
        finished = uncertain + sum(c[s] for s in ("accepted", "rejected", "deferred", "failed"))
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.done_this_run / elapsed
        remaining = max(self.total - finished, 0)
        eta = _duration(remaining / rate) if rate > 0 else "--:--:--"
        fraction = finished / self.total if self.total else 1.0
        bar = "#" * int(fraction * 20)
        return (f"[{bar:<20}] {fraction:4.0%} {finished}/{self.total} sent {c['accepted']} "
                f"failed {c['rejected'] + c['failed']} deferred {c['deferred']} "
                f"uncertain {uncertain}  {rate:.1f} msg/s ETA {eta}")

    def draw(self, force: bool = False) -> None:
        """Redraw (terminal) or print a line when its period has passed (or ``force``)."""
        now = time.monotonic()
        if self.tty:
            text = self.line()
            self.stream.write("\r" + text.ljust(self._width))
            self._width = len(text)
        elif force or now - self._last_line >= LINE_INTERVAL:
            self.stream.write(self.line() + "\n")
            self._last_line = now
        self.stream.flush()

    async def run(self, each_tick: Callable[[], object] | None = None) -> None:
        """Redraw periodically until cancelled (run it as a task beside the sending).

        Args:
            each_tick: Called before each redraw. The campaign commits its journal there,
                so that the counts drawn are durable ones.
        """
        period = TTY_INTERVAL if self.tty else POLL_INTERVAL
        while True:
            await asyncio.sleep(period)
            if each_tick is not None:
                each_tick()
            self.draw()

    def finish(self) -> None:
        """The last redraw, ending the terminal line."""
        self.draw(force=True)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
