"""The providers' balance endpoints, answered as the real hosts answer them.

* DeepSeek, ``GET /user/balance``: ``{"is_available", "balance_infos": [{"currency": "CNY",
  "total_balance": "…", "granted_balance", "topped_up_balance"}]}``, amounts as strings;
* Moonshot, ``GET /v1/users/me/balance``: ``{"code": 0, "data": {"available_balance": …,
  "voucher_balance", "cash_balance"}, "scode": "0x0", "status": true}``, amounts as numbers;
* OpenRouter, ``GET /v1/credits``: ``{"data": {"total_credits": …, "total_usage": …}}``, what
  is left being the difference;
* SiliconFlow, ``GET /v1/user/info``: ``{"code": 20000, "message": "OK", "status": true,
  "data": {…, "balance", "chargeBalance", "totalBalance": "…"}}``, amounts as strings.

DeepSeek's balance sits outside ``/v1`` (at the host's root), the others under it. A key's
balance is its runtime override (``PUT /_sim/balances/{key}`` with ``{"balance": "3.50"}``,
``DELETE`` drops it, ``GET`` shows it), else ``SimulatorConfig.balances[key]``, else
``default_balance``; like the fault overrides it lives in the worker process. A key whose fault
(override, configuration or ``fault-…`` name) is ``401`` is refused with the provider's own 401;
``500`` and ``503`` answer a server error, ``malformed-json`` half a body, ``hang`` nothing.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote

import orjson

from vectorengine.simulator.config import SimulatorConfig
from vectorengine.simulator.faults import FaultKeyError
from vectorengine.simulator.stats import NO_KEY
from vectorengine.simulator.wire import JSON_TYPE, ApiError

if TYPE_CHECKING:
    from vectorengine.simulator.exchange import Exchange

Provider = Literal["deepseek", "moonshot", "openrouter", "siliconflow"]

PATHS: dict[str, Provider] = {
    "/user/balance": "deepseek",
    "/v1/users/me/balance": "moonshot",
    "/v1/credits": "openrouter",
    "/v1/user/info": "siliconflow",
}
CONTROL_PREFIX = "/_sim/balances/"
OPENROUTER_USAGE = Decimal("25.5")  # reported total_usage; total_credits is the balance plus this
_CENT = Decimal("0.01")


class KeyBalances:
    """The balance each key's account reports: runtime overrides over the configuration."""

    def __init__(self, config: SimulatorConfig) -> None:
        self._config = config
        self._overrides: dict[str, Decimal] = {}

    def of(self, key: str) -> Decimal:
        return self.state(key)[0]

    def state(self, key: str) -> tuple[Decimal, str]:
        """The balance of ``key`` and where it comes from (override, config or default)."""
        if key in self._overrides:
            return self._overrides[key], "override"
        if key in self._config.balances:
            return self._config.balances[key], "config"
        return self._config.default_balance, "default"

    def set(self, key: str, amount: Decimal) -> None:
        self._overrides[key] = amount

    def clear(self, key: str) -> None:
        self._overrides.pop(key, None)

    def reset(self) -> None:
        self._overrides.clear()


async def serve(ex: Exchange) -> None:
    """Answer one balance request (the path is one of :data:`PATHS`)."""
    app, scope = ex.app, ex.scope
    provider = PATHS[scope.path]
    if scope.method != "GET":
        raise ApiError(
            405, f"Invalid method for URL ({scope.method} {scope.path})", headers=[("allow", "GET")]
        )
    key = _bearer(scope.headers.get("authorization"))
    ex.key = key or NO_KEY
    call_number = app.stats.record(ex.key, scope.path)
    ex.counted = True
    if key is None:
        _send(ex, *_refused(provider, None))
        return
    try:
        fault = app.keys.fault_for(key)
    except FaultKeyError:  # a malformed fault-… name is no valid key
        _send(ex, *_refused(provider, key))
        return
    if fault is not None and app.keys.strikes(key, fault, call_number, ex.arrived):
        app.stats.record_fault(key)
        if fault.mode == "401":
            _send(ex, *_refused(provider, key))
            return
        if fault.mode in ("500", "503"):
            raise ApiError(int(fault.mode), "The server had an error while processing your request.")
        if fault.mode == "hang":
            await ex.pause(None)  # until the client gives up
    body = orjson.dumps(_answer(provider, app.balances.of(key), key))
    if fault is not None and fault.mode == "malformed-json":
        body = body[: len(body) // 2]
    _send(ex, 200, body)


def control(ex: Exchange, raw: bytes) -> None:
    """``GET``/``PUT``/``DELETE /_sim/balances/{key}``: read, set or drop a key's balance."""
    method, balances = ex.scope.method, ex.app.balances
    key = unquote(ex.scope.path[len(CONTROL_PREFIX) :])
    if method == "PUT":
        balances.set(key, _amount_of(raw))
    elif method == "DELETE":
        balances.clear(key)
    amount, source = balances.state(key)
    ex.responded = True
    body = orjson.dumps({"key": key, "balance": format(amount, "f"), "source": source})
    ex.protocol.response_bytes(200, [("content-type", JSON_TYPE)], body)


# -- bodies -----------------------------------------------------------------------------------------


def _answer(provider: Provider, amount: Decimal, key: str) -> Any:
    if provider == "deepseek":
        total = _cents(amount)
        return {
            "is_available": amount > 0,
            "balance_infos": [
                {
                    "currency": "CNY",
                    "total_balance": total,
                    "granted_balance": "0.00",
                    "topped_up_balance": total,
                }
            ],
        }
    if provider == "moonshot":  # cash may be negative (owed); what is available is then the voucher
        available = amount if amount > 0 else Decimal(0)
        return {
            "code": 0,
            "data": {
                "available_balance": _number(available),
                "voucher_balance": _number(Decimal(0)),
                "cash_balance": _number(amount),
            },
            "scode": "0x0",
            "status": True,
        }
    if provider == "openrouter":
        return {
            "data": {
                "total_credits": _number(amount + OPENROUTER_USAGE),
                "total_usage": _number(OPENROUTER_USAGE),
            }
        }
    return {
        "code": 20000,
        "message": "OK",
        "status": True,
        "data": {
            "id": "sim-" + hashlib.sha256(key.encode()).hexdigest()[:12],
            "name": "simulator",
            "image": "",
            "email": "",
            "isAdmin": False,
            "balance": "0.00",
            "status": "normal",
            "introduction": "",
            "role": "",
            "chargeBalance": _cents(amount),
            "totalBalance": _cents(amount),
        },
    }


def _refused(provider: Provider, key: str | None) -> tuple[int, bytes]:
    """The provider's 401 for a missing (``None``) or unknown key."""
    if provider == "deepseek":
        message = (
            f"Authentication Fails, Your api key: ****{key[-4:]} is invalid"
            if key
            else "Authentication Fails (auth header format should be Bearer sk-...)"
        )
        error: dict[str, Any] = {
            "message": message,
            "type": "authentication_error",
            "param": None,
            "code": "invalid_request_error",
        }
        return 401, orjson.dumps({"error": error})
    if provider == "moonshot":
        return 401, orjson.dumps(
            {"error": {"message": "Invalid Authentication", "type": "invalid_authentication_error"}}
        )
    if provider == "openrouter":
        message = "User not found." if key else "No cookie auth credentials found"
        return 401, orjson.dumps({"error": {"message": message, "code": 401}})
    return 401, orjson.dumps("Api key is invalid" if key else "Invalid token")  # a bare JSON string


def _send(ex: Exchange, status: int, body: bytes) -> None:
    ex.responded = True
    ex.app.stats.record_status(ex.key, status)
    ex.protocol.response_bytes(status, [("content-type", JSON_TYPE)], body)


def _cents(amount: Decimal) -> str:
    """As the hosts write amounts in strings: at least two decimals (``"110.00"``)."""
    exponent = amount.as_tuple().exponent
    return format(amount if isinstance(exponent, int) and exponent <= -2 else amount.quantize(_CENT), "f")


def _number(amount: Decimal) -> orjson.Fragment:
    """A JSON number with exactly the amount's digits (``49.58894``, never a binary float's)."""
    return orjson.Fragment(format(amount, "f").encode())


def _bearer(header: Any) -> str | None:
    scheme, _, token = str(header or "").strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _amount_of(raw: bytes) -> Decimal:
    """The balance of a ``PUT /_sim/balances/{key}`` body ``{"balance": "3.50"}`` (or a number)."""
    try:
        body = orjson.loads(raw)
        value = body["balance"]
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise TypeError
        amount = Decimal(str(value))
    except (orjson.JSONDecodeError, KeyError, TypeError, InvalidOperation):
        amount = Decimal("NaN")
    if not amount.is_finite():
        raise ApiError(400, 'Expected a JSON body {"balance": "<decimal amount>"}.', param="balance")
    return amount
