"""fastsmtp.celery with real components: redis-server, Celery worker processes, our server.

Every process is started by the test on 127.0.0.1 with a free port and stopped by its PID;
every wait is bounded. The recording server (in this process) notes each message's id
(its ``X-Id`` header) and its arrival time, so the checks are on what the server saw.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.redis import CeleryWorker, RedisServer, require_redis

from fastsmtp.server import SMTPServerThread

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

#: Seconds a whole run may take at most before the test fails (not a performance bound:
#: a hang must end).
RUN_LIMIT = 240.0
SENDER = "news@example.net"
_ID = re.compile(rb"^X-Id: (\S+)", re.M)


class Arrivals:
    """Records each accepted message's ``X-Id`` and arrival time (``time.time()``)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, float]] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        now = time.time()
        match = _ID.search(envelope.content)
        with self.lock:
            self.seen.append((match.group(1).decode() if match else "?", now))
        return "250 2.0.0 stored"

    def ids(self) -> Counter[str]:
        with self.lock:
            return Counter(i for i, _ in self.seen)

    def times(self) -> list[float]:
        with self.lock:
            return sorted(t for _, t in self.seen)


@pytest.fixture
def arrivals() -> Iterator[tuple[Arrivals, SMTPServerThread]]:
    recorder = Arrivals()
    thread = SMTPServerThread(recorder, "127.0.0.1", 0)
    thread.start()
    try:
        yield recorder, thread
    finally:
        thread.stop()


def message(i: int) -> bytes:
    return (f"From: {SENDER}\r\nTo: user{i}@example.com\r\nSubject: hello {i}\r\n"
            f"X-Id: m{i}\r\n\r\n" + "x" * 200 + "\r\n").encode()


def payloads(ids: range) -> list[dict[str, Any]]:
    from fastsmtp.celery import message_payload
    from fastsmtp.message import Envelope

    return [message_payload(f"m{i}", message(i), Envelope(SENDER, [f"user{i}@example.com"]))
            for i in ids]


def client_app(redis_url: str) -> Any:
    from celery import Celery

    from fastsmtp.celery.ready import configure_app

    app = Celery("fastsmtp-test-client", broker=redis_url, backend=redis_url)
    configure_app(app)
    return app


def enqueue(app: Any, total: int, batch: int, namespace: str) -> list[Any]:
    from fastsmtp.celery import SEND_BATCH

    return [app.send_task(SEND_BATCH, args=[payloads(range(start, min(start + batch, total)))],
                          kwargs={"namespace": namespace})
            for start in range(0, total, batch)]


def store_state(redis_url: str, namespace: str) -> dict[str, dict[str, Any]]:
    """The store's entries, read with a plain client (retrying while Redis restarts)."""
    import redis

    from fastsmtp.celery.store import state_key

    deadline = time.monotonic() + 30
    while True:
        try:
            client = redis.Redis.from_url(redis_url)
            try:
                raw = client.hgetall(state_key(namespace))
            finally:
                client.close()
            return {k.decode(): json.loads(v) for k, v in raw.items()}
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)  # Redis is restarting: nothing to wait on but its port


def wait_settled(redis_url: str, namespace: str, total: int, workers: list[CeleryWorker],
                 limit: float = RUN_LIMIT) -> dict[str, dict[str, Any]]:
    """Until every message has a final or uncertain state and none is being sent."""
    deadline = time.monotonic() + limit
    while True:
        state = store_state(redis_url, namespace)
        if len(state) == total and all(v["s"] not in ("sending", "queued", "pending")
                                       for v in state.values()):
            return state
        if time.monotonic() > deadline:
            logs = "\n".join(w.log()[-2000:] for w in workers)
            raise AssertionError(f"not settled: {Counter(v['s'] for v in state.values())} "
                                 f"of {total}\n{logs}")
        time.sleep(0.1)  # the store is polled, as the campaign client does


def worker_env(redis_url: str, port: int, **extra: str) -> dict[str, str]:
    return {"FASTSMTP_BROKER_URL": redis_url,
            "FASTSMTP_SMTP_URL": f"smtp://127.0.0.1:{port}/?ignore_tls=true",
            "FASTSMTP_CONNECTIONS": "2", **extra}


def max_in_window(times: list[float], delta: float) -> int:
    """The most arrivals any half-open window of ``delta`` seconds holds."""
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= delta:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def test_two_workers_5000_messages_exactly_once_under_one_rate_limit(
        tmp_path: Path, arrivals: tuple[Arrivals, SMTPServerThread]) -> None:
    recorder, server = arrivals
    total, limit, delta = 5000, 100, 0.25
    with RedisServer() as redis_server:
        env = worker_env(redis_server.url, server.port, FASTSMTP_RATE_LIMIT=str(limit),
                         FASTSMTP_RATE_DELTA=str(delta))
        workers = [CeleryWorker(env, f"w{i}", tmp_path / f"w{i}.log") for i in range(2)]
        try:
            for w in workers:
                w.wait_ready()
            app = client_app(redis_server.url)
            started = time.monotonic()
            results = enqueue(app, total, 100, "t5000")
            outcomes = [o for r in results for o in r.get(timeout=RUN_LIMIT)]
            elapsed = time.monotonic() - started
            state = store_state(redis_server.url, "t5000")
        finally:
            for w in workers:
                w.stop()
    print(f"\n5000 messages, 2 workers, limit {limit}/{delta}s: {elapsed:.1f} s")
    # Results complete: one outcome per message, all accepted, as the store says.
    assert sorted(o["id"] for o in outcomes) == sorted(f"m{i}" for i in range(total))
    assert {o["status"] for o in outcomes} == {"accepted"}
    assert Counter(v["s"] for v in state.values()) == {"accepted": total}
    # Each delivered exactly once.
    seen = recorder.ids()
    assert len(seen) == total and set(seen.values()) == {1}
    # Both workers worked, and together they kept the one limit at the server.
    for w in workers:
        assert "succeeded" in w.log(), w.log()[-2000:]
    assert max_in_window(recorder.times(), delta) <= limit


@pytest.mark.timeout(RUN_LIMIT + 60)  # its own waits report with the workers' logs
def test_kill_9_a_worker_mid_batch_nothing_twice_nothing_lost(
        tmp_path: Path, arrivals: tuple[Arrivals, SMTPServerThread]) -> None:
    recorder, server = arrivals
    total = 4000
    with RedisServer() as redis_server:
        # No rate limit: claims go by whole windows, so the kill finds messages claimed and
        # in flight. A short visibility timeout makes Redis hand the dead worker's tasks
        # to the other.
        env = worker_env(redis_server.url, server.port, FASTSMTP_VISIBILITY="4")
        victim = CeleryWorker(env, "victim", tmp_path / "victim.log")
        survivor = CeleryWorker(env, "survivor", tmp_path / "survivor.log")
        try:
            victim.wait_ready()
            survivor.wait_ready()
            app = client_app(redis_server.url)
            enqueue(app, total, 100, "kill")
            deadline = time.monotonic() + RUN_LIMIT
            while len(recorder.ids()) < total // 3:  # mid-campaign: a third arrived
                assert time.monotonic() < deadline, victim.log()[-2000:]
                time.sleep(0.01)
            victim.kill()
            state = wait_settled(redis_server.url, "kill", total, [victim, survivor])
        finally:
            victim.stop()
            survivor.stop()
    seen = recorder.ids()
    statuses = Counter(v["s"] for v in state.values())
    uncertain = {k for k, v in state.items() if v["s"] == "maybe-delivered"}
    print(f"\nkill -9: {statuses}")
    assert max(seen.values()) == 1  # no message delivered twice
    assert set(statuses) <= {"accepted", "maybe-delivered"}
    # Every accepted one arrived; none lost: what did not arrive is reported uncertain.
    accepted = {k for k, v in state.items() if v["s"] == "accepted"}
    assert accepted <= set(seen)
    assert set(f"m{i}" for i in range(total)) - set(seen) <= uncertain
    # Only the ones in flight in the dead worker: at most its claims, a window outstanding
    # in its pool and the next window claimed (2 x 32).
    assert len(uncertain) <= 64
    assert accepted | uncertain == set(state)


def test_redis_restarted_mid_run_resumes_and_sends_nothing_twice(
        tmp_path: Path, arrivals: tuple[Arrivals, SMTPServerThread]) -> None:
    recorder, server = arrivals
    total = 1000
    with RedisServer(appendonly=True) as redis_server:
        env = worker_env(redis_server.url, server.port, FASTSMTP_RATE_LIMIT="40",
                         FASTSMTP_RATE_DELTA="0.1", FASTSMTP_VISIBILITY="4")
        workers = [CeleryWorker(env, f"r{i}", tmp_path / f"r{i}.log") for i in range(2)]
        try:
            for w in workers:
                w.wait_ready()
            app = client_app(redis_server.url)
            enqueue(app, total, 25, "restart")
            deadline = time.monotonic() + RUN_LIMIT
            while len(recorder.ids()) < total // 3:
                assert time.monotonic() < deadline, workers[0].log()[-2000:]
                time.sleep(0.01)
            redis_server.stop()  # graceful: the AOF is complete
            before = len(recorder.ids())
            redis_server.start()  # same port, same directory: the AOF is read back
            state = wait_settled(redis_server.url, "restart", total, workers)
        finally:
            for w in workers:
                w.stop()
    seen = recorder.ids()
    statuses = Counter(v["s"] for v in state.values())
    print(f"\nredis restart: {statuses}, {before} arrived before the restart")
    assert max(seen.values()) == 1
    assert set(statuses) <= {"accepted", "maybe-delivered"}
    assert {k for k, v in state.items() if v["s"] == "accepted"} <= set(seen)
    uncertain = {k for k, v in state.items() if v["s"] == "maybe-delivered"}
    assert set(f"m{i}" for i in range(total)) - set(seen) <= uncertain
    assert statuses["accepted"] > before  # the run went on after the restart


def test_store_claims_are_atomic_and_outcomes_never_undo_a_250() -> None:
    require_redis()
    import asyncio

    from fastsmtp.celery import MessageStore, redis_client

    async def main(url: str) -> None:
        client = redis_client(url, retry_seconds=1)
        store = MessageStore(client, "unit")
        assert await store.claim(["a", "b"], "t1") == ["", ""]
        assert await store.claim(["a"], "t1") == [""]  # the same claim retried: still ours
        await store.record("t1", [("a", "accepted", 250, "ok")])
        # Another execution: a is final, b was left sending by t1 -> maybe-delivered.
        assert await store.claim(["a", "b", "c"], "t2") == ["accepted", "maybe-delivered", ""]
        assert await store.record("t2", [("a", "failed", None, "x")]) == 0
        assert (await store.get("a")).status == "accepted"  # type: ignore[union-attr]
        # t1 was alive after all: its real outcome wins over the presumption.
        assert await store.record("t1", [("b", "accepted", 250, "ok")]) == 1
        assert await store.claim(["b"], "t3", resend_uncertain=True) == ["accepted"]
        await store.record("t2", [("c", "deferred", 451, "later")])
        assert await store.claim(["c"], "t4") == [""]  # deferred is sent again
        assert await store.counts() == {"accepted": 2, "sending": 1}
        await client.aclose()

    with RedisServer() as server:
        asyncio.run(main(server.url))


def wait_logged(worker: CeleryWorker, text: str, limit: float = RUN_LIMIT) -> None:
    """Until ``text`` is in the worker's log (its only signal of a retry being scheduled)."""
    deadline = time.monotonic() + limit
    while text not in worker.log():
        assert time.monotonic() < deadline, f"no {text!r} in: {worker.log()[-3000:]}"
        assert worker.proc.poll() is None, worker.log()[-3000:]
        time.sleep(0.05)


def test_a_batch_failing_on_its_store_is_retried_and_sends_each_once(
        tmp_path: Path, arrivals: tuple[Arrivals, SMTPServerThread]) -> None:
    """A real fault: the store's Redis (apart from the broker's) is down when the batches
    run, so the first executions' claims fail once their short store retry is exhausted.
    Celery retries the tasks; the store is back by then and every message goes once."""
    recorder, server = arrivals
    total = 60
    with RedisServer() as broker, RedisServer() as store:
        env = worker_env(broker.url, server.port, FASTSMTP_STORE_URL=store.url,
                         FASTSMTP_RESULT_BACKEND=broker.url, FASTSMTP_STORE_RETRY="0.5")
        w = CeleryWorker(env, "retry", tmp_path / "retry.log")
        try:
            w.wait_ready()
            store.stop()  # the store goes away; the broker stays
            app = client_app(broker.url)
            results = enqueue(app, total, 30, "retried")
            wait_logged(w, "retry 1 of 5")  # an execution failed and its retry is scheduled
            assert len(recorder.ids()) == 0  # nothing was sent without its claim
            store.start()  # same port; the retries find it back
            outcomes = [o for r in results for o in r.get(timeout=RUN_LIMIT)]
            state = store_state(store.url, "retried")
        finally:
            w.stop()
    assert sorted(o["id"] for o in outcomes) == sorted(f"m{i}" for i in range(total))
    assert {o["status"] for o in outcomes} == {"accepted"}, outcomes
    assert Counter(v["s"] for v in state.values()) == {"accepted": total}
    seen = recorder.ids()
    assert len(seen) == total and set(seen.values()) == {1}  # each exactly once


def test_malformed_payloads_are_failed_for_good_not_retried(
        tmp_path: Path, arrivals: tuple[Arrivals, SMTPServerThread]) -> None:
    from fastsmtp.celery import SEND_BATCH

    recorder, server = arrivals
    good = payloads(range(3))
    bad_data = {**good[1], "data": "not base64!"}
    no_rcpt = {k: v for k, v in good[2].items() if k != "rcpt_to"}
    no_id = {"mail_from": SENDER, "rcpt_to": ["x@example.com"], "data": ""}
    with RedisServer() as redis_server:
        w = CeleryWorker(worker_env(redis_server.url, server.port), "bad", tmp_path / "bad.log")
        try:
            w.wait_ready()
            app = client_app(redis_server.url)
            mixed = app.send_task(SEND_BATCH, args=[[good[0], bad_data, no_rcpt, no_id]],
                                  kwargs={"namespace": "bad"})
            junk = app.send_task(SEND_BATCH, args=["not a list"], kwargs={"namespace": "bad"})
            outcomes = mixed.get(timeout=RUN_LIMIT)
            with pytest.raises(Exception, match="a batch is a list"):
                junk.get(timeout=RUN_LIMIT)
            state = store_state(redis_server.url, "bad")
            log = w.log()
        finally:
            w.stop()
    # One outcome per payload, in order: the good one sent, the others failed with why.
    assert [(o["id"], o["status"]) for o in outcomes] == [
        ("m0", "accepted"), ("m1", "failed"), ("m2", "failed"), ("", "failed")]
    assert all("malformed message payload" in o["reply"] for o in outcomes[1:]), outcomes
    assert "rcpt_to" in outcomes[2]["reply"]
    # Final and visible in the store (what the campaign client waits on), never sent.
    assert {k: v["s"] for k, v in state.items()} == {"m0": "accepted", "m1": "failed",
                                                     "m2": "failed"}
    assert "malformed message payload" in state["m1"]["r"]
    assert recorder.ids() == Counter({"m0": 1})
    assert junk.state == "FAILURE"
    assert "not retried" in log and "retry 1 of" not in log, log[-3000:]


def test_an_id_twice_in_one_batch_is_sent_once(
        tmp_path: Path, arrivals: tuple[Arrivals, SMTPServerThread]) -> None:
    from fastsmtp.celery import SEND_BATCH

    recorder, server = arrivals
    good = payloads(range(2))
    with RedisServer() as redis_server:
        w = CeleryWorker(worker_env(redis_server.url, server.port), "dup", tmp_path / "dup.log")
        try:
            w.wait_ready()
            app = client_app(redis_server.url)
            batch = [good[0], good[1], good[0], {**good[1], "data": good[0]["data"]}]
            outcomes = app.send_task(SEND_BATCH, args=[batch],
                                     kwargs={"namespace": "dup"}).get(timeout=RUN_LIMIT)
            state = store_state(redis_server.url, "dup")
        finally:
            w.stop()
    assert [(o["id"], o["status"], o["attempted"]) for o in outcomes] == [
        ("m0", "accepted", True), ("m1", "accepted", True),
        ("m0", "accepted", False), ("m1", "accepted", False)]
    assert {k: v["s"] for k, v in state.items()} == {"m0": "accepted", "m1": "accepted"}
    assert recorder.ids() == Counter({"m0": 1, "m1": 1})
