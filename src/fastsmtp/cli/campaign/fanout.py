"""``fastsmtp send --celery URL``: the campaign fanned out to Celery workers.

Validation is the same as for one process (:func:`.args.prepare`, before this runs:
nothing is enqueued if anything is wrong). Then the client renders each due message and
enqueues it in batches of :data:`BATCH` (``fastsmtp.send_batch``); the workers send and
record each outcome in the shared store (:mod:`fastsmtp.celery.store`), which is this
campaign's journal: the SQLite journal keeps only the campaign's settings (destination,
store namespace), so ``--resume`` finds the campaign again.

A message is marked ``queued`` in the store (atomically, only when it is due: never over
a 250 or an uncertain one) before its batch is enqueued, so a client that died between
the two leaves it ``queued``, which ``--resume`` enqueues again; a batch enqueued twice is
harmless, because each worker claims every message before sending it. Progress and the
results come from the store; the run ends when no message is ``queued`` or ``sending``
any more (Ctrl-C stops waiting: the workers go on, ``--resume`` picks their work up).

Waiting is bounded by progress, not by time: when the store's counts have not changed
for ``--stall-timeout`` seconds (default 300; 0 waits for ever) while messages are still
``queued`` or ``sending``, no worker is working on them (none is running, none reaches
the broker, or a batch failed for good after its retries). The client then stops
waiting, writes the results as they stand, says what to do (start or check the workers,
then ``--resume``) and exits with ``EXIT_INTERRUPTED``, as after Ctrl-C: the campaign is
intact in the store and a resume sends nothing twice.
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any, TextIO

from .errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_SERVER, EXIT_SOME_FAILED, CampaignInputError
from .journal import Journal, remove_journal
from .recipients import unique_rows
from .run import CampaignConfig, _summary, write_results

__all__ = ["run_fanout", "StoreView", "BATCH", "POLL"]

#: Messages per ``send_batch`` task.
BATCH = 50
#: Seconds between two reads of the store's counts while waiting.
POLL = 0.2


class StoreView:
    """The store's entries, read by :func:`.run.write_results` as it reads a journal."""

    def __init__(self, entries: dict[str, Any], lines: dict[str, tuple[str, int]]) -> None:
        self._entries = entries
        self._lines = lines

    def entry(self, key: str) -> tuple[str, int | None, str | None] | None:
        """``(status, code, reply)``; ``queued`` (enqueued, never attempted) is ``pending``."""
        e = self._entries.get(key)
        if e is None:
            return None
        return ("pending" if e.status == "queued" else e.status), e.code, e.reply

    def uncertain(self) -> list[tuple[str, int, str]]:
        """``(email, line, status)`` of every recipient whose delivery is unknown."""
        out = [(*self._lines[k], e.status) for k, e in self._entries.items()
               if e.status in ("sending", "maybe-delivered") and k in self._lines]
        return sorted(out, key=lambda r: r[1])


def _stop_handler(stop: asyncio.Event) -> list[signal.Signals]:
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):
            pass
    return installed


async def run_fanout(config: CampaignConfig, stream: TextIO = sys.stderr) -> int:
    """Enqueue every due message to the workers, follow the store, write the results.

    Returns:
        The exit status (see ``EXIT_*``).
    """
    from celery import Celery  # type: ignore[import-untyped]

    from ...celery import SEND_BATCH, MessageStore, message_payload, redis_client
    from ...celery.ready import configure_app
    from ...message import Envelope
    from ..progress import Progress

    assert config.celery is not None and config.info is not None
    client = redis_client(config.celery)
    try:
        await client.ping()
    except (OSError, Exception) as exc:  # redis' errors are not OSErrors
        await client.aclose()
        print(f"fastsmtp send: cannot reach the broker and store {config.destination}: "
              f"{exc}; nothing was enqueued", file=stream)
        return EXIT_SERVER
    if config.restart:
        remove_journal(config.journal)
    journal = Journal(config.journal, create=not config.resume)
    app = Celery("fastsmtp-send", broker=config.celery, backend=None)
    configure_app(app)
    stop = asyncio.Event()
    signals = _stop_handler(stop)
    try:
        namespace = journal.get_meta("namespace") if config.resume else None
        if namespace is None:
            namespace = f"fastsmtp:campaign:{uuid.uuid4().hex}"
            journal.set_meta({"destination": config.destination, "sender": config.sender,
                              "recipients": os.path.abspath(config.recipients),
                              "namespace": namespace,
                              "created": email.utils.formatdate(localtime=True)})
        store = MessageStore(client, namespace)
        progress = Progress(config.info.total, await store.counts(), stream)
        token = f"client:{uuid.uuid4().hex[:12]}"
        template, sender = config.template, config.sender

        def rows() -> Iterator[tuple[str, str, dict[str, str | None]]]:
            for _line, key, row in unique_rows(config.recipients):
                yield key, row["email"] or "", row

        async def enqueue(batch: list[tuple[str, str, dict[str, str | None]]]) -> None:
            prior = await store.claim([k for k, _, _ in batch], token, status="queued",
                                      resend_uncertain=config.resend_uncertain)
            payloads, failed = [], []
            for (key, address, row), before in zip(batch, prior):
                if before:
                    continue
                try:
                    data = template.render(row)  # type: ignore[arg-type]
                except CampaignInputError as exc:
                    failed.append((key, "failed", None, str(exc)))
                    continue
                payloads.append(message_payload(key, data, Envelope(sender, (address,))))
            if failed:
                await store.claim([f[0] for f in failed], token)  # queued -> sending (ours)
                await store.record(token, failed)
            if payloads:
                # Kombu retries while the broker is unreachable (a Redis restart).
                await asyncio.to_thread(app.send_task, SEND_BATCH, args=[payloads],
                                        kwargs={"namespace": namespace}, retry=True,
                                        retry_policy={"max_retries": 60, "interval_start": 0.2,
                                                      "interval_step": 0.5, "interval_max": 2})

        def redraw(counts: dict[str, int]) -> None:
            for status in progress.counts:
                progress.counts[status] = counts.get(status, 0)
            progress.counts["pending"] += counts.get("queued", 0)
            finished = sum(counts.get(s, 0) for s in
                           ("accepted", "rejected", "deferred", "failed", "maybe-delivered"))
            progress.done_this_run = max(0, finished - done_before)

        done_before = sum(v for k, v in (await store.counts()).items()
                          if k not in ("queued", "sending", "pending"))
        progress.stale = 0
        progress.draw(force=True)
        batch: list[tuple[str, str, dict[str, str | None]]] = []
        for item in rows():
            if stop.is_set():
                break
            batch.append(item)
            if len(batch) >= BATCH:
                await enqueue(batch)
                batch = []
                redraw(await store.counts())
                progress.draw()
        if batch and not stop.is_set():
            await enqueue(batch)
        stalled = False
        last: dict[str, int] | None = None
        changed = time.monotonic()
        while not stop.is_set():
            counts = await store.counts()
            redraw(counts)
            progress.draw()
            if not counts.get("queued") and not counts.get("sending"):
                break
            now = time.monotonic()
            if counts != last:
                last, changed = counts, now
            elif config.stall_timeout and now - changed >= config.stall_timeout:
                stalled = True
                break
            try:
                await asyncio.wait_for(stop.wait(), POLL)
            except asyncio.TimeoutError:
                pass
        redraw(await store.counts())
        progress.finish()
        entries = await store.snapshot()
        lines = {key: (row["email"] or "", line)
                 for line, key, row in unique_rows(config.recipients)}
        view = StoreView(entries, lines)
        counts = write_results(config, view)
        interrupted = stop.is_set() or stalled
        _summary(config, view, counts, progress, stream, None, interrupted=interrupted)
        if stalled:
            waiting = (last or {}).get("queued", 0) + (last or {}).get("sending", 0)
            print(f"fastsmtp send: stopped waiting: no progress for {config.stall_timeout:g} s "
                  f"(--stall-timeout) with {waiting} message(s) still queued or sending. "
                  "Check that workers are running and reach this broker and the SMTP "
                  "server (start them with: fastsmtp worker --broker "
                  f"{config.destination.removeprefix('celery:')} --server SMTP-URL; read "
                  "their logs), then continue with the same command plus --resume "
                  "(nobody gets the message twice)", file=stream, flush=True)
        if interrupted:
            return EXIT_INTERRUPTED
        return EXIT_OK if counts.get("accepted", 0) == config.info.total else EXIT_SOME_FAILED
    finally:
        loop = asyncio.get_running_loop()
        for sig in signals:
            loop.remove_signal_handler(sig)
        journal.close()
        await client.aclose()
