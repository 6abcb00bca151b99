"""The admission state in Redis, shared by every worker and instance.

One Lua script checks every limit of a request and applies them all or none, so concurrent
requests on any number of processes can never overdraw a balance or pass a cap together.
Balances are seeded from the database on first use (a missing balance key is never read as
zero or as unlimited); spend counters are seeded at start, and again whenever the marker key
shows that Redis lost its data, so a cold cache cannot open the caps.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from vectorengine.billing.meter import WINDOW_S, Denied, Plan, balance_key
from vectorengine.errors import GatewayError, Kind

log = logging.getLogger(__name__)

PREFIX = "ve:"
SEEDED = PREFIX + "seeded"
MAX_CONNECTIONS = 64  # per worker
CONCURRENCY_TTL_S = 900  # a crashed worker's slots free themselves after this long

# KEYS: the seeded marker, then one key per check. ARGV: now, amount, then per check: kind,
# limit, expiry (unix seconds; 0: none). Returns {0} when admitted; {i, retry_after} when check
# i fails; {-1} when the
# marker is missing; {-2, i} when check i is a balance nobody has loaded yet.
_ADMIT = """
local now = tonumber(ARGV[1])
local amount = tonumber(ARGV[2])
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
local n = #KEYS - 1
for i = 1, n do
  local key = KEYS[i + 1]
  local kind = ARGV[3 * i]
  local limit = tonumber(ARGV[3 * i + 1])
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
for i = 1, n do
  local key = KEYS[i + 1]
  local kind = ARGV[3 * i]
  local expires = tonumber(ARGV[3 * i + 2])
  if kind == 'balance' then
    redis.call('DECRBY', key, amount)
  elseif kind == 'cap' then
    redis.call('INCRBY', key, amount)
    if expires > 0 then redis.call('EXPIREAT', key, expires + 86400) end
  elseif kind == 'concurrency' then
    redis.call('INCR', key)
    redis.call('EXPIRE', key, @CONC_TTL@)
  elseif kind == 'rpm' then
    redis.call('HINCRBY', key, now, 1)
    redis.call('EXPIRE', key, @WINDOW@ + 1)
  end
end
return {0}
""".replace("@WINDOW@", str(WINDOW_S)).replace("@CONC_TTL@", str(CONCURRENCY_TTL_S))

# KEYS: one per check. ARGV: now, amount held, amount charged, tokens, then per check: kind.
_SETTLE = """
local now = tonumber(ARGV[1])
local back = tonumber(ARGV[2]) - tonumber(ARGV[3])
local tokens = tonumber(ARGV[4])
for i = 1, #KEYS do
  local key = KEYS[i]
  local kind = ARGV[4 + i]
  if kind == 'balance' then
    if back ~= 0 and redis.call('EXISTS', key) == 1 then redis.call('INCRBY', key, back) end
  elseif kind == 'cap' then
    if back ~= 0 and redis.call('EXISTS', key) == 1 then redis.call('DECRBY', key, back) end
  elseif kind == 'concurrency' then
    if tonumber(redis.call('GET', key) or '0') > 0 then redis.call('DECR', key) end
  elseif kind == 'tpm' and tokens > 0 then
    redis.call('HINCRBY', key, now, tokens)
    redis.call('EXPIRE', key, @WINDOW@ + 1)
  end
end
return 0
""".replace("@WINDOW@", str(WINDOW_S))

# Add to a balance only if it is loaded (else the next request loads it from the database,
# which already has the change).
_CREDIT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('INCRBY', KEYS[1], ARGV[1]) end
return false
"""


class RedisMeter:
    """``load_balance(user_id)`` reads a balance from the database; ``load_spend()`` returns the
    spend counters of the current periods (both used only when Redis lacks them)."""

    def __init__(
        self,
        url: str,
        load_balance: Callable[[int], Awaitable[int]],
        load_spend: Callable[[], Awaitable[dict[str, int]]],
    ) -> None:
        import redis.asyncio as aioredis  # optional dependency: `pip install vectorengine[redis]`

        # Requests wait for a free connection (a short Lua call each) instead of failing.
        pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=MAX_CONNECTIONS, timeout=10)
        self._redis = aioredis.Redis(connection_pool=pool)
        self._errors: tuple[type[BaseException], ...] = (aioredis.RedisError, OSError)
        self._admit = self._redis.register_script(_ADMIT)
        self._settle = self._redis.register_script(_SETTLE)
        self._credit = self._redis.register_script(_CREDIT)
        self._load_balance = load_balance
        self._load_spend = load_spend
        self._pending: set[asyncio.Task[None]] = set()

    async def seed(self) -> None:
        """Load the current periods' spend counters unless another worker already has."""
        if await self._redis.exists(SEEDED):
            return
        spend = await self._load_spend()
        async with self._redis.pipeline(transaction=True) as pipe:
            for key, value in spend.items():
                pipe.set(PREFIX + key, value, nx=True, ex=40 * 86400 if ":p" in key else None)
            pipe.set(SEEDED, 1)
            await pipe.execute()

    async def admit(self, plan: Plan, now_s: int) -> None:
        try:
            await self._admit_once_seeded(plan, now_s)
        except self._errors as exc:
            # Fail closed: without the shared state no limit or balance can be checked.
            log.error("Redis unavailable for admission: %s", exc)
            raise GatewayError(
                Kind.STATE_UNAVAILABLE,
                "The gateway cannot check balances and limits right now; retry shortly.",
                headers=(("retry-after", "1"),),
            ) from None

    async def _admit_once_seeded(self, plan: Plan, now_s: int) -> None:
        keys = [SEEDED, *(PREFIX + c.key for c in plan.checks)]
        args: list[int | str] = [now_s, plan.amount]
        for c in plan.checks:
            args += [c.kind, c.limit, c.expires_at]
        for _ in range(3):
            result = await self._admit(keys=keys, args=args)
            code = int(result[0])
            if code == 0:
                return
            if code == -1:
                log.warning("Redis has lost the spend counters; seeding them again from the database")
                await self.seed()
            elif code == -2:
                check = plan.checks[int(result[1]) - 1]
                value = await self._load_balance(plan.user_id or 0)
                await self._redis.set(PREFIX + check.key, value, nx=True)
            else:
                check = plan.checks[code - 1]
                raise Denied(check, int(result[1]) or None)
        raise RuntimeError("Redis admission did not settle after seeding")

    def settle(self, plan: Plan, charged: int, tokens: int, now_s: int) -> None:
        """Queued on the event loop: the request's answer never waits for Redis."""
        task = asyncio.get_running_loop().create_task(self._do_settle(plan, charged, tokens, now_s))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _do_settle(self, plan: Plan, charged: int, tokens: int, now_s: int) -> None:
        keys = [PREFIX + c.key for c in plan.checks]
        args: list[int | str] = [now_s, plan.amount, charged, tokens, *(c.kind for c in plan.checks)]
        for delay in (0.0, 0.05, 0.2, 1.0, 3.0):
            await asyncio.sleep(delay)
            try:
                await self._settle(keys=keys, args=args)
                return
            except Exception as exc:  # Redis unreachable for a moment: retry, then log
                last = exc
        log.error("could not settle a request in Redis (hold %d, charged %d): %s", plan.amount, charged, last)

    async def credit(self, user_id: int, amount: int) -> None:
        await self._credit(keys=[PREFIX + balance_key(user_id)], args=[amount])

    async def balance(self, user_id: int) -> int | None:
        value = await self._redis.get(PREFIX + balance_key(user_id))
        return int(value) if value is not None else None

    async def spent(self, key: str) -> int:
        return int(await self._redis.get(PREFIX + key) or 0)

    async def flush(self) -> None:
        """Wait for every queued settlement (on shutdown)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def close(self) -> None:
        await self.flush()
        await self._redis.aclose()
