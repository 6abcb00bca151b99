"""Prices and the cost of one request: pure arithmetic on integers, no I/O.

A :class:`Price` holds integer micro-USD: per million tokens for the token rates, per unit for
images, seconds of audio or video, and calls. The cost of a request is every unit times its
rate, summed, times the group multiplier (in parts per million), rounded once to the nearest
micro-USD. The reservation bound uses the same rates with the prompt estimate and the output
limit, and rounds up, so a request within its estimates never costs more than was held.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from importlib import resources
from typing import Annotated

import msgspec
import yaml

from vectorengine.billing.money import MICRO, round_half_up, to_micro
from vectorengine.protocol.usage import Usage

PPM = 1_000_000  # multipliers are integers in parts per million: 1.0 → 1_000_000
_SCALE = MICRO * PPM  # token units × per-1M rates × ppm multiplier → micro-USD

Micro = Annotated[int, msgspec.Meta(ge=0)]


class Price(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """Unit prices of one model, in integer micro-USD (token rates per 1M tokens)."""

    input: Micro = 0
    output: Micro = 0
    cached_input: Micro | None = None  # prompt tokens read from the provider's cache; None: input
    cache_write: Micro | None = None  # prompt tokens written to the cache; None: input
    reasoning: Micro | None = None  # reasoning (thinking) tokens; None: output
    per_image: Micro = 0
    per_second: Micro = 0  # of audio or video
    per_call: Micro = 0
    max_output: Annotated[int, msgspec.Meta(ge=1)] | None = None  # tokens; bounds a reservation


UsdRate = Decimal  # checked non-negative by to_price


class PriceConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A price as people write it: decimal USD per 1M tokens, per image, per second, per call."""

    input: UsdRate = Decimal(0)
    output: UsdRate = Decimal(0)
    cached_input: UsdRate | None = None
    cache_write: UsdRate | None = None
    reasoning: UsdRate | None = None
    per_image: UsdRate = Decimal(0)
    per_second: UsdRate = Decimal(0)
    per_call: UsdRate = Decimal(0)
    max_output: Annotated[int, msgspec.Meta(ge=1)] | None = None

    def to_price(self) -> Price:
        def opt(v: Decimal | None) -> int | None:
            return None if v is None else to_micro(v, negative=False)

        return Price(
            input=to_micro(self.input, negative=False),
            output=to_micro(self.output, negative=False),
            cached_input=opt(self.cached_input),
            cache_write=opt(self.cache_write),
            reasoning=opt(self.reasoning),
            per_image=to_micro(self.per_image, negative=False),
            per_second=to_micro(self.per_second, negative=False),
            per_call=to_micro(self.per_call, negative=False),
            max_output=self.max_output,
        )


_NO_USAGE = Usage()


class Units(msgspec.Struct, frozen=True, gc=False):
    """What a request used, in the units prices are quoted in."""

    usage: Usage = _NO_USAGE
    images: int = 0
    media_ms: int = 0  # milliseconds of audio or video
    calls: int = 1


def _scaled(price: Price, units: Units) -> int:
    """The cost before the multiplier, in millionths of a micro-USD (exact)."""
    u = units.usage
    prompt = u.prompt_tokens if u.prompt_tokens > 0 else 0
    completion = u.completion_tokens if u.completion_tokens > 0 else 0
    cached = min(u.cached_tokens, prompt) if u.cached_tokens > 0 else 0
    written = min(u.cache_write_tokens, prompt - cached) if u.cache_write_tokens > 0 else 0
    reasoning = min(u.reasoning_tokens, completion) if u.reasoning_tokens > 0 else 0
    tokens = (prompt - cached - written) * price.input + (completion - reasoning) * price.output
    if cached:
        tokens += cached * (price.input if price.cached_input is None else price.cached_input)
    if written:
        tokens += written * (price.input if price.cache_write is None else price.cache_write)
    if reasoning:
        tokens += reasoning * (price.output if price.reasoning is None else price.reasoning)
    return tokens + _scaled_fixed(price, units)


def _scaled_fixed(price: Price, units: Units) -> int:
    """The cost of the calls, images and media time alone (``units.usage`` is not read),
    before the multiplier, in millionths of a micro-USD."""
    fixed = price.per_call * units.calls + price.per_image * units.images
    return fixed * MICRO + price.per_second * units.media_ms * (MICRO // 1000)


def cost(price: Price, units: Units, multiplier_ppm: int) -> int:
    """Micro-USD for what a request used, rounded once, halves up."""
    return round_half_up(_scaled(price, units) * multiplier_ppm, _SCALE)


def bound(price: Price, prompt_tokens: int, max_output: int, multiplier_ppm: int, fixed: Units) -> int:
    """The most a request can cost if it stays within its prompt estimate and output limit:
    every prompt token at the dearest prompt rate, every output token at the dearest output
    rate, plus the fixed units (their usage is not read); rounded up."""
    dear_in = max(price.input, price.cache_write or 0, price.cached_input or 0)
    dear_out = max(price.output, price.reasoning or 0)
    media = _scaled_fixed(price, fixed)
    scaled = (prompt_tokens * dear_in + max_output * dear_out + media) * multiplier_ppm
    return -(-scaled // _SCALE)


def load_default_prices() -> dict[str, Price]:
    """The prices of well-known models shipped with the package (``default_prices.yaml``)."""
    text = resources.files("vectorengine.billing").joinpath("default_prices.yaml").read_text("utf-8")
    raw = yaml.safe_load(text)
    table = msgspec.convert(raw, dict[str, PriceConfig])
    return {model: cfg.to_price() for model, cfg in table.items()}


class PriceBook:
    """Model → price: the administrator's prices over the shipped defaults."""

    __slots__ = ("_table",)

    def __init__(self, defaults: Mapping[str, Price], overrides: Mapping[str, Price]) -> None:
        self._table = {**defaults, **overrides}

    def get(self, model: str) -> Price | None:
        return self._table.get(model)

    def items(self) -> list[tuple[str, Price]]:
        return sorted(self._table.items())
