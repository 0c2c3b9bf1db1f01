"""SMTPPool's one delivery path, with runs of one message (``batch_size=1``).

A slot hands its connection runs of up to ``batch_size`` jobs (``send_many`` fed from
the queue). ``test_pool.py`` covers the default; here the whole of it runs again with
``batch_size=1`` (so retries, maybe-delivered, cancellation, max_messages, idle and
back-pressure rules hold for runs of one too), plus tests specific to runs: a loss
mid-run, runs and max_messages. ``test_pipelining_across_messages`` is not rerun: a run
of one has nothing to pipeline behind its dot, by definition.
"""

from __future__ import annotations

import asyncio

import pytest
import test_pool
from test_pool import *  # noqa: F401,F403 - the default pool's tests, run batched here
from test_pool import ENV, body

from fastsmtp.errors import SMTPMaybeDelivered
from fastsmtp.pool import SMTPPool

_make_pool = test_pool.make_pool
del test_pipelining_across_messages  # noqa: F821 - runs of one do not pipeline (docstring)


@pytest.fixture(autouse=True)
def one_task_per_message(monkeypatch: pytest.MonkeyPatch) -> None:
    """test_pool's tests, rerun here, get pools whose runs are one message long."""

    def make_pool(port: int, **options: object) -> SMTPPool:
        options.setdefault("batch_size", 1)
        return _make_pool(port, **options)

    monkeypatch.setattr(test_pool, "make_pool", make_pool)


async def test_loss_mid_batch_splits_maybe_delivered_from_retried(recorder) -> None:
    """A connection lost after message 3's dot: 3 is maybe delivered (never resent);
    the messages batched behind it were not written, so they are retried."""
    recorder.data_action[3] = "drop"
    async with _make_pool(recorder.port, max_connections=1) as pool:
        results = await asyncio.gather(
            *(pool.send(body(i), ENV) for i in range(1, 9)), return_exceptions=True
        )
    assert isinstance(results[2], SMTPMaybeDelivered)
    assert all(r.response.code == 250 for i, r in enumerate(results) if i != 2)
    assert sorted(recorder.delivered) == [1, 2, 4, 5, 6, 7, 8]
    assert recorder.attempts[3] == 1  # never resent


async def test_batches_respect_max_messages(recorder) -> None:
    """A batch never runs a connection past max_messages."""
    async with _make_pool(recorder.port, max_connections=1, max_messages=4) as pool:
        await asyncio.gather(*(pool.send(body(i), ENV) for i in range(10)))
    assert sorted(recorder.delivered) == list(range(10))
    assert recorder.ehlo == 3  # 4 + 4 + 2
