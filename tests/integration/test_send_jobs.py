"""``SMTPConnection.send_jobs``: the pipeline fed by a scheduler's ``take()``.

Our client against our server on 127.0.0.1, over DATA and over BDAT: the jobs arrive in
the order taken, invalid ones fail alone, and a scheduler that stops taking once the
connection broke keeps its jobs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from fastsmtp.connection import SMTPConnection
from fastsmtp.errors import SMTPEnvelopeError, SMTPServiceClosing
from fastsmtp.message import Envelope
from fastsmtp.retry import is_retryable

from support.server import Recorder, serve


@dataclass
class Job:
    message: bytes
    envelope: Envelope
    name: str = ""


@dataclass
class Scheduler:
    """Hands out its jobs one at a time, as a pool's queue would."""

    jobs: list[Job]
    conn: SMTPConnection | None = None
    taken: list[str] = field(default_factory=list)
    nones: int = 0

    def take(self) -> Job | None:
        if not self.jobs or (self.conn is not None and not self.conn.is_connected):
            self.nones += 1
            return None
        job = self.jobs.pop(0)
        self.taken.append(job.name)
        return job


def jobs(count: int) -> list[Job]:
    return [Job(b"Subject: %d\r\n\r\nbody %d\r\n" % (i, i),
                Envelope("a@x.test", [f"r{i}@y.test"]), f"job{i}") for i in range(count)]


@pytest.mark.parametrize("chunking", [False, True], ids=["DATA", "BDAT"])
async def test_jobs_are_sent_in_the_order_taken(chunking: bool) -> None:
    recorder = Recorder()
    async with serve(recorder) as server:
        async with SMTPConnection("127.0.0.1", server.port, ignore_tls=True,
                                  chunking=chunking) as conn:
            assert conn.capabilities.pipelining
            scheduler = Scheduler(jobs(20))
            outcomes = [(job.name, outcome) async for job, outcome
                        in conn.send_jobs(scheduler.take)]
    assert [name for name, _ in outcomes] == [f"job{i}" for i in range(20)]
    assert all(outcome.response.code == 250 for _, outcome in outcomes)  # type: ignore[union-attr]
    assert [rcpts for _, rcpts, _ in recorder.messages] == [[f"r{i}@y.test"] for i in range(20)]
    assert [data.split(b"\r\n")[0] for _, _, data in recorder.messages] == \
        [b"Subject: %d" % i for i in range(20)]
    assert scheduler.nones >= 1  # asked until it had nothing more


async def test_an_invalid_job_fails_alone() -> None:
    recorder = Recorder()
    work = jobs(3)
    work[1].envelope = Envelope("a@x.test> RET=FULL", ["b@y.test"])
    async with serve(recorder) as server:
        async with SMTPConnection("127.0.0.1", server.port, ignore_tls=True) as conn:
            outcomes = [outcome async for _, outcome in conn.send_jobs(Scheduler(work).take)]
    assert isinstance(outcomes[1], SMTPEnvelopeError)
    assert [type(o).__name__ for o in (outcomes[0], outcomes[2])] == ["SendResult"] * 2
    assert [rcpts for _, rcpts, _ in recorder.messages] == [["r0@y.test"], ["r2@y.test"]]


class ClosesOnSecond(Recorder):
    """Accepts the first message, answers the second's data with 421."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.messages:
            return "421 4.3.0 closing"
        return await super().handle_DATA(server, session, envelope)


async def test_a_scheduler_keeps_its_jobs_once_the_connection_broke() -> None:
    recorder = ClosesOnSecond()
    async with serve(recorder) as server:
        conn = SMTPConnection("127.0.0.1", server.port, ignore_tls=True, chunking=False)
        async with conn:
            scheduler = Scheduler(jobs(6), conn)
            outcomes = [outcome async for _, outcome in conn.send_jobs(scheduler.take)]
    # The first delivered; the second refused with 421; the third, whose envelope rode
    # with the second's dot, not sent (retryable); the rest never taken.
    assert scheduler.taken == ["job0", "job1", "job2"]
    assert [name for name in (job.name for job in scheduler.jobs)] == ["job3", "job4", "job5"]
    assert outcomes[0].response.code == 250  # type: ignore[union-attr]
    assert isinstance(outcomes[1], SMTPServiceClosing)
    assert isinstance(outcomes[2], Exception) and is_retryable(outcomes[2])
    assert len(recorder.messages) == 1
