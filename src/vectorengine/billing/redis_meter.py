"""The admission state in Redis, shared by every worker and instance.

One Lua script checks every limit of a request and applies them all or none, so concurrent
requests on any number of processes can never overdraw a balance or pass a cap together.
Balances are seeded from the database on first use (a missing balance key is never read as
zero or as unlimited); spend counters are seeded at start, and again whenever the marker key
shows that Redis lost its data, so a cold cache cannot open the caps.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from collections.abc import Awaitable, Callable

from vectorengine.billing.meter import WINDOW_S, Denied, Plan, balance_key
from vectorengine.errors import GatewayError, Kind

log = logging.getLogger(__name__)

PREFIX = "ve:"
SEEDED = PREFIX + "seeded"
HOLDS = PREFIX + "holds:"  # + meter id: a hash of the meter's unsettled holds, by ticket
ALIVE = PREFIX + "alive:"  # + meter id: refreshed while the meter runs
MAX_CONNECTIONS = 64  # per worker
REDIS_TIMEOUT_S = 5.0  # the longest any one exchange with Redis may take
CONCURRENCY_TTL_S = 900  # a crashed worker's slots free themselves after this long
ALIVE_TTL_S = 30.0  # a meter not heard from for this long is taken for dead: its holds go back

# KEYS: the seeded marker, this meter's holds, then one key per check. ARGV: now, amount,
# ticket, then per check: kind, limit, expiry (unix seconds; 0: none). Returns {0} when admitted;
# {i, retry_after} when check i fails; {-1} when the marker is missing; {-2, i} when check i is a
# balance nobody has loaded yet. An admitted hold is written to the holds hash under its ticket
# (amount, then kind and key of each check to undo) until its settlement removes it.
_ADMIT = """
local now = tonumber(ARGV[1])
local amount = tonumber(ARGV[2])
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
local n = #KEYS - 2
for i = 1, n do
  local key = KEYS[i + 2]
  local kind = ARGV[3 * i + 1]
  local limit = tonumber(ARGV[3 * i + 2])
  if kind == 'balance' then
    local v = redis.call('GET', key)
    if not v then return {-2, i} end
    if tonumber(v) < amount then return {i, 0} end
  elseif kind == 'cap' then
    if tonumber(redis.call('GET', key) or '0') + amount > limit then return {i, 0} end
  elseif kind == 'concurrency' then
    if tonumber(redis.call('GET', key) or '0') >= limit then return {i, 1} end
  else
    local flat = redis.call('HGETALL', key)
    local seconds = {}
    local counts = {}
    local total = 0
    for j = 1, #flat, 2 do
      local s = tonumber(flat[j])
      if s <= now - @WINDOW@ then
        redis.call('HDEL', key, flat[j])
      else
        seconds[#seconds + 1] = s
        counts[s] = tonumber(flat[j + 1])
        total = total + counts[s]
      end
    end
    if total > limit - 1 then
      table.sort(seconds)
      local retry = 1
      for _, s in ipairs(seconds) do
        total = total - counts[s]
        if total <= limit - 1 then retry = math.max(1, s + @WINDOW@ - now) break end
      end
      return {i, retry}
    end
  end
end
local undo = {ARGV[2]}
for i = 1, n do
  local key = KEYS[i + 2]
  local kind = ARGV[3 * i + 1]
  local expires = tonumber(ARGV[3 * i + 3])
  if kind == 'balance' then
    redis.call('DECRBY', key, amount)
    undo[#undo + 1] = 'balance ' .. key
  elseif kind == 'cap' then
    redis.call('INCRBY', key, amount)
    if expires > 0 then redis.call('EXPIREAT', key, expires + 86400) end
    undo[#undo + 1] = 'cap ' .. key
  elseif kind == 'concurrency' then
    redis.call('INCR', key)
    redis.call('EXPIRE', key, @CONC_TTL@)
    undo[#undo + 1] = 'concurrency ' .. key
  elseif kind == 'rpm' then
    redis.call('HINCRBY', key, now, 1)
    redis.call('EXPIRE', key, @WINDOW@ + 1)
  end
end
redis.call('HSET', KEYS[2], ARGV[3], table.concat(undo, '\\n'))
return {0}
""".replace("@WINDOW@", str(WINDOW_S)).replace("@CONC_TTL@", str(CONCURRENCY_TTL_S))

# KEYS: this meter's holds, then one key per check. ARGV: now, amount held, amount charged,
# tokens, ticket, then per check: kind. When the hold is no longer in the holds hash, another
# worker took this one for dead and released all of it: then the charge is taken in full.
_SETTLE = """
local now = tonumber(ARGV[1])
local back = tonumber(ARGV[2]) - tonumber(ARGV[3])
local tokens = tonumber(ARGV[4])
local released = redis.call('HDEL', KEYS[1], ARGV[5]) == 0
if released then back = -tonumber(ARGV[3]) end
for i = 2, #KEYS do
  local key = KEYS[i]
  local kind = ARGV[4 + i]
  if kind == 'balance' then
    if back ~= 0 and redis.call('EXISTS', key) == 1 then redis.call('INCRBY', key, back) end
  elseif kind == 'cap' then
    if back ~= 0 and redis.call('EXISTS', key) == 1 then redis.call('DECRBY', key, back) end
  elseif kind == 'concurrency' then
    if not released and tonumber(redis.call('GET', key) or '0') > 0 then redis.call('DECR', key) end
  elseif kind == 'tpm' and tokens > 0 then
    redis.call('HINCRBY', key, now, tokens)
    redis.call('EXPIRE', key, @WINDOW@ + 1)
  end
end
return 0
""".replace("@WINDOW@", str(WINDOW_S))

# KEYS: a meter's liveness key and its holds. If the meter is gone (its liveness key expired),
# give back everything its holds took and delete them; returns how many holds were released.
# The keys a hold names are read from its entry (one Redis server, not a cluster).
_RELEASE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local flat = redis.call('HGETALL', KEYS[2])
for j = 2, #flat, 2 do
  local amount = nil
  for line in string.gmatch(flat[j], '[^\\n]+') do
    if not amount then
      amount = tonumber(line)
    else
      local kind, key = string.match(line, '^(%S+) (.+)$')
      if kind == 'balance' then
        if amount ~= 0 and redis.call('EXISTS', key) == 1 then redis.call('INCRBY', key, amount) end
      elseif kind == 'cap' then
        if amount ~= 0 and redis.call('EXISTS', key) == 1 then redis.call('DECRBY', key, amount) end
      elseif tonumber(redis.call('GET', key) or '0') > 0 then
        redis.call('DECR', key)
      end
    end
  end
end
redis.call('DEL', KEYS[2])
return #flat / 2
"""

# Add to a balance only if it is loaded (else the next request loads it from the database,
# which already has the change).
_CREDIT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('INCRBY', KEYS[1], ARGV[1]) end
return false
"""


def _bounded() -> asyncio.Timeout:
    """The bound on one exchange with Redis (asyncio.timeout keeps outside cancellations)."""
    return asyncio.timeout(REDIS_TIMEOUT_S)


class RedisMeter:
    """``load_balance(user_id)`` reads a balance from the database; ``load_spend()`` returns the
    spend counters of the current periods (both used only when Redis lacks them)."""

    def __init__(
        self,
        url: str,
        load_balance: Callable[[int], Awaitable[int]],
        load_spend: Callable[[], Awaitable[dict[str, int]]],
        alive_ttl_s: float = ALIVE_TTL_S,
    ) -> None:
        import redis.asyncio as aioredis  # optional dependency: `pip install vectorengine[redis]`

        # Each worker's holds are listed under its own id until they are settled. If the worker
        # dies (killed, out of memory), its liveness key expires and any other worker gives the
        # held money, cap room and concurrency slots back: a crash cannot lock funds away.
        self.id = uuid.uuid4().hex[:16]
        self._holds = HOLDS + self.id
        self._alive = ALIVE + self.id
        self._alive_ttl_ms = int(alive_ttl_s * 1000)
        self._tickets = itertools.count(1)
        self._watch: asyncio.Task[None] | None = None
        self._unsettled: list[tuple[list[str], list[int | str]]] = []  # settlements Redis refused

        # Requests wait for a free connection (a short Lua call each) instead of failing. No
        # exchange waits on a silent server longer than REDIS_TIMEOUT_S (admission then fails
        # closed, a settlement is retried): each is bounded here with asyncio.timeout. The
        # socket timeout is off (redis-py 8 sets 5 s by default) because redis-py applies it to
        # every write through asyncio.wait_for, which on Python 3.11 swallows a cancellation
        # that lands as the write completes: a stopped heartbeat, or the admission of a client
        # that has gone, would carry on.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=MAX_CONNECTIONS,
            timeout=10,
            socket_timeout=None,
            socket_connect_timeout=REDIS_TIMEOUT_S,
        )
        self._redis = aioredis.Redis(connection_pool=pool)
        self._errors: tuple[type[BaseException], ...] = (aioredis.RedisError, OSError)
        self._admit = self._redis.register_script(_ADMIT)
        self._settle = self._redis.register_script(_SETTLE)
        self._credit = self._redis.register_script(_CREDIT)
        self._release = self._redis.register_script(_RELEASE)
        self._load_balance = load_balance
        self._load_spend = load_spend
        self._pending: set[asyncio.Task[None]] = set()

    async def seed(self) -> None:
        """Load the current periods' spend counters unless another worker already has."""
        async with _bounded():
            if await self._redis.exists(SEEDED):
                return
        spend = await self._load_spend()
        async with _bounded(), self._redis.pipeline(transaction=True) as pipe:
            for key, value in spend.items():
                pipe.set(PREFIX + key, value, nx=True, ex=40 * 86400 if ":p" in key else None)
            pipe.set(SEEDED, 1)
            await pipe.execute()

    async def start(self) -> None:
        """Announce this meter, release the holds of dead ones, and keep doing both."""
        async with _bounded():
            await self._redis.set(self._alive, 1, px=self._alive_ttl_ms)
            await self.release_dead()
        self._watch = asyncio.get_running_loop().create_task(self._keep_alive(), name="meter-alive")

    async def _keep_alive(self) -> None:
        period = self._alive_ttl_ms / 3000.0
        while True:
            await asyncio.sleep(period)
            try:
                async with _bounded():
                    await self._redis.set(self._alive, 1, px=self._alive_ttl_ms)
                    await self._retry_unsettled()
                    await self.release_dead()
            except self._errors as exc:  # the next round tries again; admissions fail closed meanwhile
                log.warning("Redis unavailable for the meter's heartbeat: %s", exc)

    async def release_dead(self) -> int:
        """Give back every hold of meters whose liveness key has expired; returns how many."""
        released = 0
        async for raw in self._redis.scan_iter(match=HOLDS + "*", count=100):
            key = raw.decode() if isinstance(raw, bytes) else str(raw)
            meter_id = key.removeprefix(HOLDS)
            if meter_id == self.id:
                continue
            n = int(await self._release(keys=[ALIVE + meter_id, key]))
            if n:
                log.warning(
                    "released %d holds of worker meter %s, which stopped without settling", n, meter_id
                )
            released += n
        return released

    async def admit(self, plan: Plan, now_s: int) -> int:
        try:
            return await self._admit_once_seeded(plan, now_s)
        except self._errors as exc:
            # Fail closed: without the shared state no limit or balance can be checked.
            log.error("Redis unavailable for admission: %s", exc)
            raise GatewayError(
                Kind.STATE_UNAVAILABLE,
                "The gateway cannot check balances and limits right now; retry shortly.",
                headers=(("retry-after", "1"),),
            ) from None

    async def _admit_once_seeded(self, plan: Plan, now_s: int) -> int:
        ticket = next(self._tickets)
        keys = [SEEDED, self._holds, *(PREFIX + c.key for c in plan.checks)]
        args: list[int | str] = [now_s, plan.amount, ticket]
        for c in plan.checks:
            args += [c.kind, c.limit, c.expires_at]
        for _ in range(3):
            async with _bounded():
                result = await self._admit(keys=keys, args=args)
            code = int(result[0])
            if code == 0:
                return ticket
            if code == -1:
                log.warning("Redis has lost the spend counters; seeding them again from the database")
                await self.seed()
            elif code == -2:
                check = plan.checks[int(result[1]) - 1]
                value = await self._load_balance(plan.user_id or 0)
                async with _bounded():
                    await self._redis.set(PREFIX + check.key, value, nx=True)
            else:
                check = plan.checks[code - 1]
                raise Denied(check, int(result[1]) or None)
        raise RuntimeError("Redis admission did not settle after seeding")

    def settle(self, plan: Plan, ticket: int, charged: int, tokens: int, now_s: int) -> None:
        """Queued on the event loop: the request's answer never waits for Redis."""
        task = asyncio.get_running_loop().create_task(self._do_settle(plan, ticket, charged, tokens, now_s))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _do_settle(self, plan: Plan, ticket: int, charged: int, tokens: int, now_s: int) -> None:
        keys = [self._holds, *(PREFIX + c.key for c in plan.checks)]
        args: list[int | str] = [now_s, plan.amount, charged, tokens, ticket, *(c.kind for c in plan.checks)]
        for delay in (0.0, 0.05, 0.2, 1.0, 3.0):
            await asyncio.sleep(delay)
            try:
                async with _bounded():
                    await self._settle(keys=keys, args=args)
                return
            except Exception as exc:  # Redis unreachable for a moment: retry, then keep it
                last = exc
        log.error(
            "could not settle a request in Redis (hold %d, charged %d), will retry: %s",
            plan.amount,
            charged,
            last,
        )
        self._unsettled.append((keys, args))  # its hold stays listed until this succeeds

    async def _retry_unsettled(self) -> None:
        while self._unsettled:
            keys, args = self._unsettled[0]
            await self._settle(keys=keys, args=args)
            self._unsettled.pop(0)

    async def credit(self, user_id: int, amount: int) -> None:
        async with _bounded():
            await self._credit(keys=[PREFIX + balance_key(user_id)], args=[amount])

    async def balance(self, user_id: int) -> int | None:
        async with _bounded():
            value = await self._redis.get(PREFIX + balance_key(user_id))
        return int(value) if value is not None else None

    async def bump(self, key: str, ttl_s: int) -> int:
        async with _bounded(), self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(PREFIX + key)
            pipe.expire(PREFIX + key, ttl_s, nx=True)
            count, _ = await pipe.execute()
        return int(count)

    async def spent(self, key: str) -> int:
        async with _bounded():
            return int(await self._redis.get(PREFIX + key) or 0)

    async def flush(self) -> None:
        """Wait for every queued settlement (on shutdown)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.wait((self._watch,))  # its end; a cancellation of close() itself propagates
        await self.flush()
        try:
            async with _bounded():
                await self._retry_unsettled()
                if not await self._redis.hlen(self._holds):  # every hold is settled
                    await self._redis.delete(self._holds)
                await self._redis.delete(self._alive)  # what is left, another worker gives back
        except self._errors as exc:
            log.error(
                "Redis unavailable at shutdown; %d settlements not applied: %s", len(self._unsettled), exc
            )
        await self._redis.aclose()
