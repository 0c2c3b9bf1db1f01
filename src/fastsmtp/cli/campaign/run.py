"""``fastsmtp send``'s orchestration: verify the server, send what is due, journal, report.

The template and the whole list are checked before this runs (:func:`.args.prepare`).
The CSV is streamed a second time as the source of
:meth:`~fastsmtp.pool.SMTPPool.send_many`; each message is rendered only when the pool asks
for it, so memory stays flat for a million recipients. Every recipient is marked
``sending`` in the journal (committed) before its message is handed over, and its outcome
is recorded after (see :mod:`.journal` for the group commit).
"""

from __future__ import annotations

import asyncio
import csv
import email.utils
import os
import signal
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from itertools import islice
from typing import Any, Protocol, TextIO

from ...errors import SMTPError, SMTPSenderRefused
from ...message import Envelope
from ...retry import CONFIG_CHECK_MESSAGES, is_configuration_error, same_sender_refusal
from ..progress import Progress, stats_line
from .errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SERVER,
    EXIT_SOME_FAILED,
    CampaignInputError,
)
from .journal import SETTINGS_REFUSED, Journal, remove_journal
from .outcome import classify, deferred, should_send
from .recipients import Recipients, address_key, unique_rows
from .template import MessageTemplate

__all__ = ["CampaignConfig", "run_campaign", "write_results", "MARK_BATCH", "FLUSH_INTERVAL"]

#: Rows marked ``sending`` per journal commit (group commit; see :mod:`.journal`).
MARK_BATCH = 32
#: Longest time an outcome waits in memory before its commit.
FLUSH_INTERVAL = 0.2

#: Uncertain recipients listed by name in the summary (all of them are in the results).
SUMMARY_LIST = 20


@dataclass
class CampaignConfig:
    """Everything ``fastsmtp send`` resolved from its arguments.

    Attributes:
        recipients: The CSV file.
        template: The compiled message template.
        sender: The envelope sender.
        pool_kwargs: Keyword arguments of :class:`~fastsmtp.pool.SMTPPool` (None: the
            embedded server).
        destination: A description of where messages go (stored in the journal).
        maildir: The embedded server's Maildir (when ``pool_kwargs`` is None).
        results: The results CSV.
        journal: The journal database.
        resume: Continue the campaign in ``journal``.
        resend_uncertain: Send again to recipients whose delivery is unknown.
        restart: Discard an existing journal (only once the server check passed).
        window: Messages outstanding in the pool at most; 0 picks
            ``max(8, 2 * connections * PIPELINE_DEPTH)``: enough to keep every connection
            pipelined, small enough that few messages are in doubt after a crash.
        info: What the validation pass learned about the recipient list.
        celery: The broker and store URL (``--celery``): the workers send (see
            :mod:`.fanout`); None: this process sends.
        stall_timeout: With ``celery``: seconds without progress in the store after
            which the client stops waiting (0: never).
    """

    recipients: str
    template: MessageTemplate
    sender: str
    pool_kwargs: dict[str, Any] | None
    destination: str
    maildir: str
    results: str
    journal: str
    resume: bool = False
    resend_uncertain: bool = False
    restart: bool = False
    window: int = 16
    info: Recipients | None = None
    celery: str | None = None
    stall_timeout: float = 0.0


class ResultsSource(Protocol):
    """What the results and the summary read: the journal, or the Celery store's view."""

    def entry(self, key: str) -> tuple[str, int | None, str | None] | None: ...

    def uncertain(self) -> list[tuple[str, int, str]]: ...


class _Stop:
    """Ctrl-C / SIGTERM handling: first stop feeding, second close the pool's queue."""

    def __init__(self) -> None:
        self.requested = 0
        self.pool: Any = None
        #: The refusal that showed the configuration is wrong (the campaign stops).
        self.halt: BaseException | None = None

    @property
    def feeding(self) -> bool:
        """May more messages be handed to the pool?"""
        return not self.requested and self.halt is None

    def __call__(self) -> None:
        self.requested += 1
        if self.requested == 1:
            print("\nfastsmtp send: stopping: letting messages in flight finish "
                  "(Ctrl-C again to drop queued ones)", file=sys.stderr, flush=True)
        elif self.requested == 2 and self.pool is not None:
            asyncio.ensure_future(self.pool.close())


async def run_campaign(config: CampaignConfig, stream: TextIO = sys.stderr) -> int:
    """Verify the server, send every due message, write results and a summary.

    Returns:
        The exit status (see ``EXIT_*``).
    """
    from ...handlers import Maildir
    from ...pool import PIPELINE_DEPTH, SMTPPool
    from ...server import SMTPServer

    if config.celery is not None:
        from .fanout import run_fanout

        return await run_fanout(config, stream)
    server: SMTPServer | None = None
    kwargs = config.pool_kwargs
    if kwargs is None:
        server = SMTPServer(Maildir(config.maildir), "127.0.0.1", 0)
        await server.start()
        kwargs = {"host": "127.0.0.1", "port": server.port, "ignore_tls": True}
    try:
        pool = SMTPPool(**kwargs)
        window = config.window or max(8, pool.pool_options.max_connections * PIPELINE_DEPTH * 2)
        try:
            await pool.verify()
        except (SMTPError, OSError) as exc:
            await pool.close()
            print(f"fastsmtp send: cannot use the server {config.destination}: {exc}; "
                  "nothing was sent", file=stream)
            return EXIT_SERVER
        if config.restart:
            remove_journal(config.journal)  # only now: a failed check keeps the old one
        journal = Journal(config.journal, create=not config.resume)
        try:
            if not config.resume:
                journal.set_meta({"destination": config.destination, "sender": config.sender,
                                  "recipients": os.path.abspath(config.recipients),
                                  "created": email.utils.formatdate(localtime=True)})
            if config.resume:
                journal.set_meta({SETTINGS_REFUSED: "0", "destination": config.destination})
            return await _send(config, pool, journal, window, stream, server)
        finally:
            journal.close()
    finally:
        if server is not None:
            await server.close()


async def _send(config: CampaignConfig, pool: Any, journal: Journal, window: int,
                stream: TextIO, server: Any) -> int:
    assert config.info is not None
    progress = Progress(config.info.total, journal.counts(), stream)
    stop = _Stop()
    stop.pool = pool
    loop = asyncio.get_running_loop()
    signals = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop)
            signals.append(sig)
        except (NotImplementedError, RuntimeError):  # no signal handlers (Windows, thread)
            pass
    template, sender = config.template, config.sender
    batch_size = min(MARK_BATCH, window)

    def take_committed() -> None:
        for _key, status in journal.committed:
            # A recipient leaves 'sending' (marked in this run) for its outcome.
            progress.moved("sending", status)
        journal.committed.clear()

    def due() -> Iterator[tuple[str, str | None, str, int, dict[str, str | None]]]:
        for line, key, row in unique_rows(config.recipients):
            # A new journal knows no address yet (and unique_rows skips duplicates):
            # only a resumed campaign needs the look-up.
            status = journal.status(key) if config.resume else None
            if should_send(status, config.resend_uncertain):
                yield key, status, row["email"] or "", line, row

    def source() -> Iterator[tuple[bytes, Envelope]]:
        candidates = due()
        while stop.feeding:
            batch = list(islice(candidates, batch_size))
            if not batch:
                return
            journal.mark_sending((key, address, line) for key, _, address, line, _ in batch)
            for _, before, _, _, _ in batch:
                progress.moved(before, "sending")
            take_committed()
            handed = 0  # rows of the batch given to the pool (or settled here)
            try:
                for key, _, address, _line, row in batch:
                    if not stop.feeding:
                        return
                    handed += 1
                    try:
                        data = template.render(row)  # type: ignore[arg-type]
                    except CampaignInputError as exc:
                        journal.record(key, "failed", None, str(exc))
                        continue
                    yield data, Envelope(sender, (address,))
            finally:
                # Stopped, or the generator was closed: the rest never reached the pool.
                journal.reset(key for key, _, _, _, _ in batch[handed:])

    def flush_due() -> None:
        # Commits outcomes left waiting when no further result arrives to trigger it (the
        # display ticks every TTY_INTERVAL on a terminal, POLL_INTERVAL otherwise).
        if journal.buffered and time.monotonic() - journal.last_flush >= FLUSH_INTERVAL:
            journal.flush()
            take_committed()

    # The first messages' MAIL refusals are held until they show whether the server
    # refuses the sender or session itself (the same 5xx to each: a configuration
    # error, see fastsmtp.retry), rather than recorded "rejected" one by one.
    need = max(2, min(CONFIG_CHECK_MESSAGES, config.info.total))
    held: list[tuple[str, BaseException]] = []
    checking = True

    def halt(outcome: BaseException) -> None:
        stop.halt = outcome
        for key, earlier in held:
            journal.record(key, *deferred(earlier))
        held.clear()

    def release_held() -> None:
        for key, earlier in held:
            journal.record(key, *classify(earlier))
        held.clear()

    def record(key: str, outcome: Any) -> None:
        nonlocal checking
        if stop.halt is not None:
            first = stop.halt
            if is_configuration_error(outcome) or same_sender_refusal([first, outcome]):
                journal.record(key, *deferred(outcome))  # involved: kept for --resume
                return
        elif is_configuration_error(outcome):
            halt(outcome)
            journal.record(key, *deferred(outcome))
            return
        elif checking:
            # (The outcome twice: a first refusal alone is a run of one.)
            if isinstance(outcome, SMTPSenderRefused) \
                    and same_sender_refusal([*(o for _, o in held), outcome, outcome]):
                held.append((key, outcome))
                if len(held) >= need:
                    halt(outcome)
                return
            checking = False
            release_held()
        journal.record(key, *classify(outcome))

    progress.draw(force=True)
    tick = asyncio.ensure_future(progress.run(flush_due))
    try:
        async for (_, envelope), outcome in pool.send_many(source(), window=window):
            record(address_key(envelope.rcpt_to[0]), outcome)
            if journal.buffered >= batch_size \
                    or time.monotonic() - journal.last_flush >= FLUSH_INTERVAL:
                journal.flush()
                take_committed()
        if held:
            # The list ended while every outcome so far was the same refusal of MAIL.
            if same_sender_refusal([o for _, o in held]):
                halt(held[-1][1])
            else:
                release_held()
        journal.flush()
        take_committed()
    finally:
        tick.cancel()
        for sig in signals:
            loop.remove_signal_handler(sig)
        await pool.close()
        journal.flush()
        take_committed()
        progress.finish()
    counts = write_results(config, journal)
    _summary(config, journal, counts, progress, stream, server, interrupted=bool(stop.requested),
             stats=pool.stats())
    if stop.halt is not None:
        journal.set_meta({SETTINGS_REFUSED: "1", "destination": config.destination})
        reply = getattr(stop.halt, "reply", None)
        print(f"fastsmtp send: stopped: the server refused MAIL ({reply or stop.halt}) in a "
              "way that means the settings are wrong, not the recipients: check --user / "
              "the server URL (--server). The messages involved are recorded deferred: "
              "fix the settings and run again with --resume to send them", file=stream,
              flush=True)
        return EXIT_SERVER
    if stop.requested:
        return EXIT_INTERRUPTED
    return EXIT_OK if counts.get("accepted", 0) == config.info.total else EXIT_SOME_FAILED


def write_results(config: CampaignConfig, journal: ResultsSource) -> dict[str, int]:
    """Write the results CSV (one row per unique recipient, list order); return counts.

    A recipient left ``sending`` by a crash is reported as ``maybe-delivered``; one never
    attempted as ``pending``. The file is replaced atomically.
    """
    counts: dict[str, int] = {}
    tmp = config.results + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["email", "status", "code", "reply"])
        for _line, key, row in unique_rows(config.recipients):
            entry = journal.entry(key)
            status, code, reply = entry if entry is not None else ("pending", None, "")
            if status == "sending":
                status, reply = "maybe-delivered", "no outcome recorded (interrupted while sending)"
            counts[status] = counts.get(status, 0) + 1
            writer.writerow([row["email"], status, "" if code is None else code, reply or ""])
    os.replace(tmp, config.results)
    return counts


def _summary(config: CampaignConfig, journal: ResultsSource, counts: Mapping[str, int],
             progress: Progress, stream: TextIO, server: Any, interrupted: bool,
             stats: Mapping[str, object] | None = None) -> None:
    assert config.info is not None
    total = config.info.total
    order = ("accepted", "rejected", "deferred", "maybe-delivered", "failed", "pending")
    parts = ", ".join(f"{counts.get(s, 0)} {s}" for s in order)
    elapsed = time.monotonic() - progress.started
    out = [
        f"fastsmtp send: {'interrupted; ' if interrupted else ''}{total} recipients: {parts}",
        f"  this run: {progress.done_this_run} messages in {elapsed:.1f} s "
        f"({progress.done_this_run / max(elapsed, 1e-9):.1f} msg/s)",
    ]
    if stats is not None:  # the pool's, when this process sent (not with --celery)
        out.append(f"  pool: {stats_line(stats)}")
    if config.info.duplicates:
        out.append(f"  {config.info.duplicates} duplicate line(s) skipped "
                   "(one message per address)")
    uncertain = journal.uncertain()
    if uncertain:
        out.append(f"  {len(uncertain)} uncertain (maybe delivered; not resent: "
                   "use --resume --resend-uncertain to send them again):")
        out.extend(f"    {addr} (line {line})" for addr, line, _ in uncertain[:SUMMARY_LIST])
        if len(uncertain) > SUMMARY_LIST:
            out.append(f"    ... and {len(uncertain) - SUMMARY_LIST} more (see the results)")
    out.append(f"  results: {config.results}")
    out.append(f"  journal: {config.journal}")
    if server is not None:
        out.append(f"  messages stored in the Maildir {os.path.join(config.maildir, 'new')} "
                   "(embedded local server: nothing left this machine)")
    if interrupted or counts.get("pending", 0) or counts.get("deferred", 0):
        out.append("  continue with the same command and --resume")
    print("\n".join(out), file=stream, flush=True)
