"""Celery fan-out: 1 KB messages to smtp-sink through one and two worker processes.

All in the same run, against the same Postfix ``smtp-sink``:

* **pool**: one process, one :class:`~fastsmtp.pool.SMTPPool` (``send_many``), no store;
* **pool+store**: the same pool behind the worker's own sending path
  (:class:`fastsmtp.celery.tasks.WorkerRuntime`, in this process, no Celery): claims and
  outcomes in Redis; the difference to **pool** is the store's per-message overhead;
* **celery xN**: N ``celery -A fastsmtp.celery worker`` processes (prefork, one child
  each), batches of ``--batch`` messages enqueued by this process; msgs/s from the first
  enqueue to the last result.

Also the bare cost of the store's two Lua scripts per message (claim + record, in groups
of the worker's window). Every program is started on a free loopback port and stopped by
its PID (the helpers are the tests', ``tests/support/redis.py``).

    PYTHONPATH=src python bench/bench_celery.py [--count N] [--batch N] [--connections N]

Under pytest, ``test_*`` run each part on a small count (``pytest bench --benchmark-disable``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from peer_programs import require, smtp_sink  # noqa: E402
from support.redis import CeleryWorker, RedisServer  # noqa: E402

SENDER = "a@example.com"
#: Seconds one Celery run may take before it counts as hung.
RUN_TIMEOUT = 600.0


def make_message(i: int, size: int = 1024) -> bytes:
    head = f"From: {SENDER}\r\nTo: b@example.com\r\nSubject: bench {i}\r\n\r\n".encode()
    return head + b"x" * max(0, size - len(head) - 2) + b"\r\n"


def _payloads(start: int, stop: int) -> list[dict[str, Any]]:
    from fastsmtp.celery import message_payload
    from fastsmtp.message import Envelope

    env = Envelope(SENDER, ["b@example.com"])
    return [message_payload(f"m{i}", make_message(i), env) for i in range(start, stop)]


def run_pool(port: int, count: int, connections: int) -> float:
    """msgs/s of one process's pool."""
    from fastsmtp._loop import new_event_loop
    from fastsmtp.message import Envelope
    from fastsmtp.pool import SMTPPool

    env = Envelope(SENDER, ["b@example.com"])
    messages = [(make_message(i), env) for i in range(count)]

    async def main() -> float:
        async with SMTPPool(host="127.0.0.1", port=port, ignore_tls=True,
                            max_connections=connections) as pool:
            started = time.perf_counter()
            async for _, outcome in pool.send_many(messages):
                assert not isinstance(outcome, Exception), outcome
            return count / (time.perf_counter() - started)

    loop = new_event_loop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def run_pool_store(port: int, redis_url: str, count: int, connections: int) -> float:
    """msgs/s of the worker's sending path (pool + store claims and outcomes), no Celery."""
    from fastsmtp.celery.tasks import TaskConfig, WorkerRuntime

    rt = WorkerRuntime(TaskConfig(store_url=redis_url, pool_options={
        "host": "127.0.0.1", "port": port, "ignore_tls": True, "max_connections": connections}))
    try:
        payloads = _payloads(0, count)
        started = time.perf_counter()
        out = rt.run(rt.send_batch(payloads, f"bench:{time.time()}", False, "bench"))
        rate = count / (time.perf_counter() - started)
        assert all(o["status"] == "accepted" for o in out)
        return rate
    finally:
        rt.close()


def store_cost(redis_url: str, count: int, window: int = 32) -> float:
    """Microseconds of claim + record per message (groups of ``window``)."""
    from fastsmtp.celery import MessageStore, redis_client

    async def main() -> float:
        client = redis_client(redis_url)
        store = MessageStore(client, f"bench-store:{time.time()}")
        ids = [f"s{i}" for i in range(count)]
        started = time.perf_counter()
        for lo in range(0, count, window):
            group = ids[lo:lo + window]
            await store.claim(group, "t")
            await store.record("t", [(i, "accepted", 250, "2.0.0 Ok") for i in group])
        elapsed = time.perf_counter() - started
        await store.delete()
        await client.aclose()
        return elapsed / count * 1e6

    return asyncio.run(main())


def run_celery(port: int, redis_url: str, count: int, workers: int, batch: int,
               connections: int, logs: Path) -> float:
    """msgs/s of ``workers`` Celery worker processes, first enqueue to last result."""
    from celery import Celery

    from fastsmtp.celery import SEND_BATCH
    from fastsmtp.celery.ready import configure_app

    env = {"FASTSMTP_BROKER_URL": redis_url,
           "FASTSMTP_SMTP_URL": f"smtp://127.0.0.1:{port}/?ignore_tls=true",
           "FASTSMTP_CONNECTIONS": str(connections)}
    procs = [CeleryWorker(env, f"bench{workers}-{i}", logs / f"bench{workers}-{i}.log")
             for i in range(workers)]
    try:
        for w in procs:
            w.wait_ready()
        app = Celery("bench", broker=redis_url, backend=redis_url)
        configure_app(app)
        namespace = f"bench:celery:{workers}:{time.time()}"
        batches = [_payloads(lo, min(lo + batch, count)) for lo in range(0, count, batch)]
        started = time.perf_counter()
        results = [app.send_task(SEND_BATCH, args=[b], kwargs={"namespace": namespace})
                   for b in batches]
        done = sum(len(r.get(timeout=RUN_TIMEOUT)) for r in results)
        rate = count / (time.perf_counter() - started)
        assert done == count
        return rate
    finally:
        for w in procs:
            w.stop()


def measure(count: int, batch: int, connections: int) -> dict[str, float]:
    """Every figure of the module docs, in one run."""
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp, smtp_sink() as port, RedisServer() as redis:
        out["pool"] = run_pool(port, count, connections)
        out["pool+store"] = run_pool_store(port, redis.url, count, connections)
        out["store_us"] = store_cost(redis.url, count)
        out["celery x1"] = run_celery(port, redis.url, count, 1, batch, connections, Path(tmp))
        out["celery x2"] = run_celery(port, redis.url, count, 2, batch, connections, Path(tmp))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=20000, help="messages per run")
    parser.add_argument("--batch", type=int, default=100, help="messages per task")
    parser.add_argument("--connections", type=int, default=4,
                        help="SMTP connections per process")
    args = parser.parse_args(argv)
    r = measure(args.count, args.batch, args.connections)
    pool_us = 1e6 / r["pool"]
    print(f"{args.count} x 1 KB to smtp-sink, {args.connections} connections per process, "
          f"batches of {args.batch}")
    for name in ("pool", "pool+store", "celery x1", "celery x2"):
        print(f"  {name:<11} {r[name]:>9.0f} msgs/s  ({r[name] / r['pool']:.2f} x pool)")
    print(f"  store overhead: {1e6 / r['pool+store'] - pool_us:.1f} us/message in the "
          f"sending path; claim + record alone {r['store_us']:.1f} us/message")
    print(f"  scaling: 2 workers / 1 worker = {r['celery x2'] / r['celery x1']:.2f}")
    return 0


# -- pytest-benchmark entries (small counts: a smoke test of the whole set-up) --------------

SMOKE_COUNT = 200


def _prereq() -> None:
    require("smtp-sink", "redis-server")


def test_celery_pool_store_1k(benchmark: Any) -> None:
    _prereq()
    with smtp_sink() as port, RedisServer() as redis:
        rate = benchmark.pedantic(run_pool_store, args=(port, redis.url, SMOKE_COUNT, 2),
                                  rounds=1, iterations=1)
    assert rate is None or rate > 0


def test_celery_one_worker_1k(benchmark: Any, tmp_path: Path) -> None:
    _prereq()
    with smtp_sink() as port, RedisServer() as redis:
        rate = benchmark.pedantic(run_celery, args=(port, redis.url, SMOKE_COUNT, 1, 50, 2,
                                                    tmp_path), rounds=1, iterations=1)
    assert rate is None or rate > 0


if __name__ == "__main__":
    sys.exit(main())
