"""What a request may cost and what it did cost: the hold before the upstream call, the
charge after it. Reads only the in-memory snapshot; the meter holds the live counters.

Charging policy (docs/billing.md):

* the hold is the most the request can cost within its prompt bound (half the bytes of a small
  body; an offline count plus a margin for a large one) and its output limit (``max_tokens``,
  else the model's maximum output);
* no charge when no upstream answered (every attempt failed before its first byte);
* an answer is charged from the usage the upstream reported; a stream cut short by the client
  or the upstream without a usage report is charged for the prompt estimate plus one token
  per content chunk delivered, and the record says the usage was estimated;
* never more than the hold: the excess is recorded as ``unbilled_micro_usd``.
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import orjson

from vectorengine import tokencount
from vectorengine.billing.meter import Check, Denied, Meter, Plan, balance_key
from vectorengine.billing.money import usd
from vectorengine.billing.prices import PPM, Price, Units, bound, cost
from vectorengine.errors import GatewayError, Kind
from vectorengine.protocol.openai import Call, Endpoint
from vectorengine.protocol.usage import Usage
from vectorengine.store.records import Limits, Token, UsageRecord, User

DEFAULT_MAX_OUTPUT = 4096  # tokens, for a model with no max_output in its price
SMALL_BODY = 8192  # bytes: up to this, the hold counts half the body's bytes as prompt tokens
MEDIA_BOUND_MS = 30 * 60 * 1000  # an audio upload is held as 30 minutes until its length is known
_NO_LIMITS = Limits()
# Endpoint sets, tested by membership (an Enum member looked up on its class costs 0.15 µs).
_TEXT_GENERATION = frozenset({Endpoint.CHAT, Endpoint.COMPLETIONS})  # bounded by max_tokens
_IMAGE_MAKING = frozenset({Endpoint.IMAGES, Endpoint.IMAGE_EDITS})  # priced per image
_AUDIO_IN = frozenset({Endpoint.TRANSCRIPTIONS, Endpoint.TRANSLATIONS})  # priced per second uploaded
_PROMPT_FIELD = {Endpoint.COMPLETIONS: "prompt", Endpoint.EMBEDDINGS: "input", Endpoint.MODERATIONS: "input"}


@dataclass(frozen=True, slots=True)
class Billing:
    """The parts of the configuration the accountant reads."""

    timezone: str = "UTC"
    prompt_margin_ppm: int = 250_000  # the hold counts the prompt estimate 25 % larger
    default_max_output: int = DEFAULT_MAX_OUTPUT


class Hold(msgspec.Struct):
    plan: Plan | None  # None: no limit applies, nothing held
    price: Price | None
    multiplier_ppm: int
    call: Call
    user_id: int | None
    images: int = 0
    audio_in: bool = False  # a transcription or translation: priced by the seconds it reports
    ticket: int = 0  # the meter's name for the hold


class Periods:
    """Calendar day and month in the billing time zone, and when each ends (unix seconds)."""

    def __init__(self, timezone: str) -> None:
        self._tz = ZoneInfo(timezone)
        self._until = 0.0
        self.day = self.month = ""
        self.day_end = self.month_end = 0.0  # unix seconds

    def at(self, now: float) -> Periods:
        if now >= self._until:
            local = dt.datetime.fromtimestamp(now, self._tz)
            self.day, self.month = local.strftime("%Y%m%d"), local.strftime("%Y%m")
            day0 = local.replace(hour=0, minute=0, second=0, microsecond=0)
            tomorrow = (day0 + dt.timedelta(days=1, hours=3)).replace(hour=0)
            next_month = (day0.replace(day=1) + dt.timedelta(days=32)).replace(day=1)
            self.day_end = tomorrow.timestamp()
            self.month_end = next_month.timestamp()
            self._until = self.day_end
        return self


def spend_keys(who: str, ident: int, day: str, month: str) -> tuple[str, str]:
    """The daily and monthly spend counters of a token (``who='t'``) or user (``'u'``)."""
    return f"spend:{who}:{ident}:p{day}", f"spend:{who}:{ident}:p{month}"


def quota_key(token_id: int) -> str:
    return f"spend:t:{token_id}:total"


class Accountant:
    def __init__(self, meter: Meter, billing: Billing, clock: Callable[[], float] = time.time) -> None:
        self.meter = meter
        self.billing = billing
        self.periods = Periods(billing.timezone)
        self._clock = clock
        self._cache: dict[tuple[int, int], tuple[Token, User | None, str, tuple[Check, ...], bool]] = {}

    async def admit(
        self,
        token: Token,
        user: User | None,
        price: Price | None,
        multiplier_ppm: int,
        call: Call,
        client_ip: str | None,
    ) -> Hold:
        if user is not None and not user.enabled:
            raise GatewayError(Kind.ACCOUNT_DISABLED, f"The account `{user.name}` is disabled.")
        if token.limits.ip_allow is not None:
            _check_ip(token.limits.ip_allow, client_ip, f"token '{token.name}'")
        if user is not None and user.limits.ip_allow is not None:
            _check_ip(user.limits.ip_allow, client_ip, f"user '{user.name}'")
        now = self._clock()
        if user is None and token.quota_micro_usd is None and token.limits == _NO_LIMITS:
            # Nobody pays and nothing limits this token: record the cost, hold nothing.
            return Hold(None, price, multiplier_ppm, call, None, *_fixed(call))
        checks, money = self._checks(token, user, now)
        if money and price is None:
            raise GatewayError(
                Kind.MODEL_NOT_PRICED,
                f"The model `{call.model}` has no price, so requests to it cannot be billed; "
                "the administrator can set one.",
                param="model",
            )
        images, audio_in = _fixed(call)
        amount = 0
        if money and price is not None:
            max_out = _max_output(call, price, self.billing.default_max_output)
            held_media = Units(images=images, media_ms=MEDIA_BOUND_MS if audio_in else 0)
            amount = bound(price, self._held_prompt(call), max_out, multiplier_ppm, held_media)
        plan = Plan(amount, checks, user.id if user is not None else None) if checks else None
        hold = Hold(plan, price, multiplier_ppm, call, user.id if user else None, images, audio_in)
        if plan is not None:
            try:
                hold.ticket = await self.meter.admit(plan, int(now))
            except Denied as denied:
                raise _refusal(denied, amount) from None
        return hold

    def _held_prompt(self, call: Call) -> int:
        """Prompt tokens to hold for. A small body holds half its bytes (more tokens than any text
        of that size has, and no counting); a large one its offline count plus the margin."""
        size = len(call.raw)
        if size <= SMALL_BODY:
            return size // 2
        estimate = _prompt_estimate(call)
        return estimate + estimate * self.billing.prompt_margin_ppm // PPM

    def _checks(self, token: Token, user: User | None, now: float) -> tuple[tuple[Check, ...], bool]:
        """The checks of a token (and its user) this period, and whether money is involved; built
        once per token, user and day (the snapshot's objects are replaced when they change)."""
        p = self.periods.at(now)
        key = (token.id, user.id if user is not None else 0)
        hit = self._cache.get(key)
        if hit is not None and hit[0] is token and hit[1] is user and hit[2] == p.day:
            return hit[3], hit[4]
        checks = self._build_checks(token, user, p)
        money = user is not None or any(c.kind == "cap" for c in checks)
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[key] = (token, user, p.day, checks, money)
        return checks, money

    def _build_checks(self, token: Token, user: User | None, p: Periods) -> tuple[Check, ...]:
        checks: list[Check] = []
        ttl_day, ttl_month = int(p.day_end), int(p.month_end)
        tl = token.limits
        tname = f"token '{token.name}'"
        day_key, month_key = spend_keys("t", token.id, p.day, p.month)
        _rates(checks, tl, f"t:{token.id}", tname)
        if tl.daily_cap_micro_usd is not None:
            checks.append(
                Check("cap", day_key, tl.daily_cap_micro_usd, f"the daily spend cap of {tname}", ttl_day)
            )
        if tl.monthly_cap_micro_usd is not None:
            label = f"the monthly spend cap of {tname}"
            checks.append(Check("cap", month_key, tl.monthly_cap_micro_usd, label, ttl_month))
        if token.quota_micro_usd is not None:
            checks.append(Check("cap", quota_key(token.id), token.quota_micro_usd, f"the quota of {tname}"))
        if user is not None:
            ul = user.limits
            uname = f"user '{user.name}'"
            uday, umonth = spend_keys("u", user.id, p.day, p.month)
            _rates(checks, ul, f"u:{user.id}", uname)
            if ul.daily_cap_micro_usd is not None:
                label = f"the daily spend cap of {uname}"
                checks.append(Check("cap", uday, ul.daily_cap_micro_usd, label, ttl_day))
            if ul.monthly_cap_micro_usd is not None:
                label = f"the monthly spend cap of {uname}"
                checks.append(Check("cap", umonth, ul.monthly_cap_micro_usd, label, ttl_month))
            checks.append(Check("balance", balance_key(user.id), 0, f"the balance of {uname}"))
        return tuple(checks)

    def settle(
        self,
        hold: Hold | None,
        rec: UsageRecord,
        usage: Usage | None,
        answered: bool,
        delivered_chunks: int,
        answer: bytes | memoryview | None = None,
    ) -> None:
        """Price what the request used, release the rest of its hold, and fill in the record."""
        if hold is None:
            return
        rec.user_id = hold.user_id
        price = hold.price
        charged = 0
        if usage is None and answered and (answer is not None or delivered_chunks):
            # No usage report: a stream cut short, or a host that sends none.
            completion = delivered_chunks if answer is None else _answer_tokens(rec, answer)
            usage = Usage(prompt_tokens=_prompt_estimate(hold.call), completion_tokens=completion)
            rec.usage_estimated = True
            rec.prompt_tokens, rec.completion_tokens = usage.prompt_tokens, usage.completion_tokens
        if usage is not None and answered and price is not None:
            units = Units(usage=usage, images=hold.images, media_ms=_media_ms(hold, answer))
            full = cost(price, units, hold.multiplier_ppm)
            charged = full if hold.plan is None else min(full, hold.plan.amount)
            rec.unbilled_micro_usd = full - charged
            rec.price = price
            rec.multiplier_ppm = hold.multiplier_ppm
        rec.cost_micro_usd = charged
        for attempt in rec.attempts or ():
            if attempt.outcome == "won":
                attempt.cost_micro_usd = charged
        if hold.plan is not None:
            rec.reserved_micro_usd = hold.plan.amount
            tokens = usage.prompt_tokens + usage.completion_tokens if usage is not None else 0
            self.meter.settle(hold.plan, hold.ticket, charged, tokens, int(self._clock()))


def _answer_tokens(rec: UsageRecord, answer: bytes | memoryview) -> int:
    """Completion tokens of a JSON answer that reported none (text generations only)."""
    if rec.endpoint not in (Endpoint.CHAT.path, Endpoint.COMPLETIONS.path):
        return 0
    return tokencount.count_text(bytes(answer).decode("utf-8", "replace"))


def _rates(checks: list[Check], limits: Limits, who: str, name: str) -> None:
    if limits.max_concurrency is not None:
        label = f"the concurrent request limit of {name}"
        checks.append(Check("concurrency", f"conc:{who}", limits.max_concurrency, label))
    if limits.rpm is not None:
        checks.append(Check("rpm", f"rpm:{who}", limits.rpm, f"the requests-per-minute limit of {name}"))
    if limits.tpm is not None:
        checks.append(Check("tpm", f"tpm:{who}", limits.tpm, f"the tokens-per-minute limit of {name}"))


def _check_ip(allowed: tuple[str, ...], client_ip: str | None, name: str) -> None:
    try:
        addr = ipaddress.ip_address(client_ip or "")
    except ValueError:
        addr = None
    if addr is None or not any(addr in net for net in _networks(allowed)):
        raise GatewayError(
            Kind.IP_NOT_ALLOWED,
            f"Requests from {client_ip or 'an unknown address'} are not allowed for {name}.",
        )


@functools.lru_cache(maxsize=4096)
def _networks(cidrs: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def _refusal(denied: Denied, amount: int) -> GatewayError:
    check = denied.check
    if check.kind == "balance":
        return GatewayError(
            Kind.INSUFFICIENT_BALANCE,
            f"Insufficient balance: this request needs a hold of ${usd(amount)} and {check.label} "
            "is lower. Top up, or lower max_tokens.",
        )
    if check.kind == "cap":
        return GatewayError(Kind.SPEND_CAP_REACHED, f"The request would exceed {check.label}.")
    retry = str(denied.retry_after_s or 1)
    return GatewayError(
        Kind.RATE_LIMITED,
        f"Rate limit reached: {check.label} ({check.limit}). Retry in {retry} s.",
        headers=(("retry-after", retry),),
    )


def _prompt_estimate(call: Call) -> int:
    body = call.body
    endpoint = call.endpoint
    if endpoint is Endpoint.CHAT:
        return tokencount.count_chat(body)
    if endpoint is Endpoint.SPEECH:
        return len(str(body.get("input") or ""))  # speech is priced per character of input
    name = _PROMPT_FIELD.get(endpoint)
    if name is None:
        if endpoint is Endpoint.RERANK:
            return sum(_text_tokens(d) for d in body.get("documents") or ()) + _text_tokens(body.get("query"))
        return _text_tokens(body.get("prompt"))
    return _text_tokens(body.get(name))


def _text_tokens(value: Any) -> int:
    if isinstance(value, str):
        return tokencount.count_text(value)
    if isinstance(value, list):
        return sum(len(v) if isinstance(v, list) else _text_tokens(v) for v in value)
    if isinstance(value, dict):
        return _text_tokens(value.get("text"))
    return 0


def _max_output(call: Call, price: Price, default: int) -> int:
    if call.endpoint not in _TEXT_GENERATION:
        return 0
    body = call.body
    for name in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value * _choices(body)
    return (price.max_output or default) * _choices(body)


def _choices(body: dict[str, Any]) -> int:
    n = body.get("n")
    return n if isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 128 else 1


def _images(call: Call) -> int:
    if call.endpoint not in _IMAGE_MAKING:
        return 0
    try:
        n = int(call.body.get("n") or 1)
    except (TypeError, ValueError):
        n = 1
    return max(1, min(n, 128))


def _fixed(call: Call) -> tuple[int, bool]:
    """Images a request asks for, and whether it uploads audio (priced by its length)."""
    return _images(call), call.endpoint in _AUDIO_IN


def _media_ms(hold: Hold, answer: bytes | memoryview | None) -> int:
    """Milliseconds of audio a transcription reports (``duration`` or ``usage.seconds``)."""
    if not hold.audio_in or not answer or not bytes(answer).lstrip().startswith(b"{"):
        return 0
    try:
        obj = orjson.loads(answer)
    except orjson.JSONDecodeError:
        return 0
    seconds = obj.get("duration")
    usage = obj.get("usage")
    if seconds is None and isinstance(usage, dict):
        seconds = usage.get("seconds")
    if isinstance(seconds, int | float) and not isinstance(seconds, bool) and seconds > 0:
        return min(int(seconds * 1000), MEDIA_BOUND_MS)
    return 0
