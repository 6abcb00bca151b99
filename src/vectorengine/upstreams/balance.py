"""A provider's balance of an upstream key: the request that asks for it and the reading of the answer.

What differs between hosts (the path, where the amount and the currency sit, whether the
balance left is a difference) is data in the registry (:class:`BalanceApi`); this module is the
one reader of that data. Amounts are read exactly: decimal strings and JSON numbers alike become
:class:`~decimal.Decimal`, never floats. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

import msgspec

from vectorengine.store.records import Channel
from vectorengine.upstreams.dialect import UpstreamRequest, auth_headers, base_url
from vectorengine.upstreams.registry import UPSTREAM_TYPES, BalanceApi, JsonPath

# JSON numbers become Decimals from their own digits (49.58894 stays 49.58894).
_DECODER = msgspec.json.Decoder(float_hook=Decimal)
# Beyond this an amount is not a balance (and its micro-units would not fit in 64 bits).
_LIMIT = Decimal(10) ** 12


class BalanceError(ValueError):
    """The answer is not a balance this host's description can read."""


@dataclass(frozen=True, slots=True)
class Balance:
    amount: Decimal  # left on the account, in ``currency``
    currency: str


def balance_api(channel: Channel) -> BalanceApi | None:
    """How ``channel``'s host reports a balance; None when it does not (or the type is unknown)."""
    utype = UPSTREAM_TYPES.get(channel.type)
    return utype.balance if utype is not None else None


def balance_url(api: BalanceApi, base: str) -> str:
    """``api.path`` under the channel's base URL, or under its scheme and host."""
    if api.root == "base_url":
        return base.rstrip("/") + api.path
    parts = urlsplit(base)
    return f"{parts.scheme}://{parts.netloc}{api.path}"


def balance_request(channel: Channel, key_index: int) -> UpstreamRequest | None:
    """The ``GET`` that asks the provider for the balance of the channel's key ``key_index``."""
    api = balance_api(channel)
    if api is None:
        return None
    utype = UPSTREAM_TYPES[channel.type]
    headers = [("accept", "application/json"), *auth_headers(utype, channel.keys[key_index])]
    return UpstreamRequest(balance_url(api, base_url(channel, utype)), headers, b"")


def read_balance(api: BalanceApi, body: bytes | memoryview, host: str) -> Balance:
    """The balance in a ``200`` answer of ``host``; :class:`BalanceError` when it holds none."""
    try:
        doc = _DECODER.decode(body)
    except msgspec.DecodeError as exc:
        raise BalanceError(f"the answer is not JSON: {exc}") from None
    amount = _amount(doc, api.amount)
    if api.used is not None:
        amount -= _amount(doc, api.used)
    return Balance(amount, _currency(api, doc, host))


def _currency(api: BalanceApi, doc: Any, host: str) -> str:
    if api.currency_at is not None:
        named = _at(doc, api.currency_at)
        if not isinstance(named, str) or not named.strip():
            raise BalanceError(f"`{_dotted(api.currency_at)}` is not a currency: {named!r}")
        return named.strip().upper()
    host = host.lower()
    for suffix, currency in api.host_currency:
        if host == suffix or host.endswith("." + suffix):
            return currency
    return api.currency


def _amount(doc: Any, path: JsonPath) -> Decimal:
    value = _at(doc, path)
    if isinstance(value, Decimal):
        dec = value
    elif isinstance(value, int) and not isinstance(value, bool):
        dec = Decimal(value)
    elif isinstance(value, str):
        try:
            dec = Decimal(value.strip())
        except InvalidOperation:
            raise BalanceError(f"`{_dotted(path)}` is not a decimal amount: {value!r}") from None
    else:
        raise BalanceError(f"`{_dotted(path)}` is not an amount: {value!r}")
    if not dec.is_finite() or abs(dec) >= _LIMIT:
        raise BalanceError(f"`{_dotted(path)}` is not a plausible amount: {value!r}")
    return dec


def _at(doc: Any, path: JsonPath) -> Any:
    node = doc
    for i, step in enumerate(path):
        if isinstance(step, int):
            ok = isinstance(node, list) and -len(node) <= step < len(node)
        else:
            ok = isinstance(node, dict) and step in node
        if not ok:
            raise BalanceError(f"the answer has no `{_dotted(path[: i + 1])}`")
        node = node[step]
    return node


def _dotted(path: JsonPath) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
