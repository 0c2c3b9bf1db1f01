"""The shared message-state store: one Redis hash per namespace, changed only by Lua.

Theory of operation
-------------------
Every message has an id, unique in its *namespace* (a campaign, an application's stream
of mail). The store holds one value per id, with the statuses of the campaign journal
(:mod:`fastsmtp.cli.campaign.journal` uses the same words):

``queued``
    enqueued by a client, not attempted yet (sent like ``pending``).
``sending``
    claimed by one task execution (its *token*) before its message went to the pool.
``accepted`` / ``rejected`` / ``failed``
    final: never sent again.
``deferred`` / ``pending``
    not delivered (a 4xx after the pool's retries, or never attempted): sent again.
``maybe-delivered``
    the connection was lost after the final dot, or see the rule below.

**The rule for a message found ``sending``.** A task execution marks a message
``sending`` (atomically, only when it may be sent) *before* the message is handed to the
pool, and records the outcome after. A value still ``sending`` under another token when a
task claims the message again means that execution died or is still running, and nothing
proves its final dot was never written: the claim turns it into ``maybe-delivered`` (the
dead execution's token kept) and does not send it. A still-running execution then records
its real outcome over it; nobody else ever does. A maybe-delivered message is sent again
only when the caller asks (``resend_uncertain``), exactly as ``fastsmtp send --resume
--resend-uncertain``.

Every change is one Lua script (read, decide and write are atomic in Redis), so two
workers given the same message can never both send it, and an outcome can never overwrite
a ``250``. A per-namespace counts hash is kept in the same scripts, so progress costs one
``HGETALL`` of a handful of fields however large the campaign.

Durability is Redis's: run it with ``appendonly yes`` (and ``appendfsync always`` for the
journal's power-loss guarantee; ``everysec`` loses up to a second of marks on a power
loss, never on a process restart).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["MessageStore", "Entry", "FINAL", "SENDABLE", "UNCERTAIN", "state_key", "counts_key",
           "run_script", "SCRIPT_ATTEMPTS"]

#: Times :func:`run_script` runs a script whose server answers NOSCRIPT (see there).
SCRIPT_ATTEMPTS = 5

#: Statuses never sent again.
FINAL = frozenset({"accepted", "rejected", "failed"})
#: Statuses sent (again) by any claim: not delivered.
SENDABLE = frozenset({"queued", "pending", "deferred"})
#: Statuses whose delivery is unknown: sent again only with ``resend_uncertain``.
UNCERTAIN = frozenset({"sending", "maybe-delivered"})

# KEYS: state hash, counts hash. ARGV: token, resend ("1"/"0"), new status ("sending" or
# "queued"), ids... Returns, per id, "" when claimed or the status that stopped it.
_CLAIM = """
local token, resend, new = ARGV[1], ARGV[2] == '1', ARGV[3]
local out = {}
for i = 4, #ARGV do
  local id = ARGV[i]
  local raw = redis.call('HGET', KEYS[1], id)
  local old = nil
  local value = nil
  if raw then value = cjson.decode(raw); old = value['s'] end
  local go = (not old) or old == 'queued' or old == 'pending' or old == 'deferred'
  if not go and resend and (old == 'sending' or old == 'maybe-delivered') then go = true end
  if old == new and value['t'] == token then
    -- This very claim, retried after a lost reply: already ours (claims are idempotent).
    out[#out + 1] = ''
  elseif go then
    redis.call('HSET', KEYS[1], id, cjson.encode({s = new, t = token}))
    if old then redis.call('HINCRBY', KEYS[2], old, -1) end
    redis.call('HINCRBY', KEYS[2], new, 1)
    out[#out + 1] = ''
  elseif old == 'sending' and new == 'sending' and value['t'] ~= token then
    -- Claimed by an execution that died (or still runs): its dot may have been written.
    value['s'] = 'maybe-delivered'
    value['r'] = 'no outcome recorded (the worker sending it stopped)'
    redis.call('HSET', KEYS[1], id, cjson.encode(value))
    redis.call('HINCRBY', KEYS[2], 'sending', -1)
    redis.call('HINCRBY', KEYS[2], 'maybe-delivered', 1)
    out[#out + 1] = 'maybe-delivered'
  else
    out[#out + 1] = old
  end
end
return out
"""

# KEYS: state hash, counts hash. ARGV: token, then (id, status, code, reply) per message.
# Only the execution that claimed a message records its outcome (a 250 is never undone).
_RECORD = """
local token = ARGV[1]
local applied = 0
for i = 2, #ARGV, 4 do
  local id, new = ARGV[i], ARGV[i + 1]
  local raw = redis.call('HGET', KEYS[1], id)
  if raw then
    local value = cjson.decode(raw)
    local old = value['s']
    if value['t'] == token and (old == 'sending' or old == 'maybe-delivered') then
      local entry = {s = new, t = token, r = ARGV[i + 3]}
      if ARGV[i + 2] ~= '' then entry['c'] = tonumber(ARGV[i + 2]) end
      redis.call('HSET', KEYS[1], id, cjson.encode(entry))
      redis.call('HINCRBY', KEYS[2], old, -1)
      redis.call('HINCRBY', KEYS[2], new, 1)
      applied = applied + 1
    end
  end
end
return applied
"""


async def run_script(script: Any, keys: Sequence[Any], args: Sequence[Any]) -> Any:
    """Run a registered ``redis.asyncio`` script, riding out an emptied script cache.

    A restarted Redis has no scripts. redis-py's script object then loads it and runs it
    again, once; but right after a restart that second try was seen answering NOSCRIPT
    too (a worker's outcome record, tests/apps/test_campaign_celery.py's Redis restart),
    and the task failed: its messages were stranded ``sending``/``queued`` and the
    campaign client waited for them for ever. So load and run again, a few times. Costs
    nothing while the script is cached (the first EVALSHA succeeds).
    """
    from redis.exceptions import NoScriptError

    for attempt in range(1, SCRIPT_ATTEMPTS + 1):
        try:
            return await script(keys=keys, args=args)
        except NoScriptError:
            if attempt == SCRIPT_ATTEMPTS:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def state_key(namespace: str) -> str:
    """The Redis hash of a namespace's message states."""
    return f"{namespace}:state"


def counts_key(namespace: str) -> str:
    """The Redis hash of a namespace's messages per status."""
    return f"{namespace}:counts"


@dataclass(frozen=True)
class Entry:
    """One message's recorded state.

    Attributes:
        status: One of the statuses of the module docs.
        code: The server's reply code, if there was one.
        reply: The reply text (or why there is none).
    """

    status: str
    code: int | None = None
    reply: str = ""


def _entry(raw: bytes | str) -> Entry:
    value = json.loads(raw)
    return Entry(value["s"], value.get("c"), value.get("r") or "")


class MessageStore:
    """The message states of one namespace in Redis, over a ``redis.asyncio`` client.

    Args:
        client: A ``redis.asyncio.Redis`` client (give it a ``retry`` to ride out a Redis
            restart: an outcome that cannot be recorded leaves its message uncertain).
        namespace: Key prefix; message ids are unique within it.
    """

    def __init__(self, client: Any, namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        self._keys = [state_key(namespace), counts_key(namespace)]
        self._claim = client.register_script(_CLAIM)
        self._record = client.register_script(_RECORD)

    async def claim(self, ids: Sequence[str], token: str, *, resend_uncertain: bool = False,
                    status: str = "sending") -> list[str]:
        """Mark the messages ``status`` where they may be sent; one round trip.

        Args:
            ids: Message ids.
            token: The claiming execution's unique token (its outcomes must carry it).
            resend_uncertain: Also take ``sending`` and ``maybe-delivered`` ones.
            status: ``sending`` (a worker, about to send) or ``queued`` (a client, about to
                enqueue).

        Returns:
            Per id: ``""`` when claimed, else the status that excluded it (a stale
            ``sending`` is returned, and stored, as ``maybe-delivered``).
        """
        if not ids:
            return []
        out = await run_script(self._claim, self._keys,
                               [token, "1" if resend_uncertain else "0", status, *ids])
        return [v.decode() if isinstance(v, bytes) else (v or "") for v in out]

    async def record(self, token: str, outcomes: Iterable[tuple[str, str, int | None, str]]
                     ) -> int:
        """Record ``(id, status, code, reply)`` outcomes of messages this token claimed.

        Returns:
            How many were applied (one claimed by another execution is not).
        """
        args: list[Any] = [token]
        for msg_id, status, code, reply in outcomes:
            args.extend((msg_id, status, "" if code is None else code, reply))
        if len(args) == 1:
            return 0
        return int(await run_script(self._record, self._keys, args))

    async def counts(self) -> dict[str, int]:
        """Messages per status (one small hash)."""
        raw: Mapping[Any, Any] = await self.client.hgetall(self._keys[1])
        return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()
                if int(v)}

    async def get(self, msg_id: str) -> Entry | None:
        """One message's entry, None when the store never saw it."""
        raw = await self.client.hget(self._keys[0], msg_id)
        return None if raw is None else _entry(raw)

    async def snapshot(self) -> dict[str, Entry]:
        """Every message's entry (read in pages with HSCAN, not one huge reply)."""
        out: dict[str, Entry] = {}
        async for key, raw in self.client.hscan_iter(self._keys[0], count=1000):
            out[key.decode() if isinstance(key, bytes) else key] = _entry(raw)
        return out

    async def delete(self) -> None:
        """Forget the namespace (both hashes)."""
        await self.client.delete(*self._keys)
