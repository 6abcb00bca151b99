"""Exact conversions between decimal USD as people write it and integer micro-USD."""

from __future__ import annotations

from decimal import ROUND_FLOOR, Decimal, InvalidOperation, localcontext

MICRO = 1_000_000


class MoneyError(ValueError):
    """An amount that is not a finite decimal, or finer than the unit it is stored in."""


def to_micro(value: object, *, scale: int = MICRO, negative: bool = True) -> int:
    """``Decimal("0.15")`` → ``150_000``. Refuses floats' binary noise by going through text,
    and refuses amounts finer than one unit rather than round them silently."""
    if isinstance(value, bool):
        raise MoneyError(f"expected a decimal amount, got {value!r}")
    try:
        dec = value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation:
        raise MoneyError(f"not a decimal amount: {value!r}") from None
    if not dec.is_finite():
        raise MoneyError(f"not a finite amount: {value!r}")
    if dec < 0 and not negative:
        raise MoneyError(f"must not be negative: {value}")
    scaled = dec * scale
    if scaled != scaled.to_integral_value():
        raise MoneyError(f"{value} has more decimal places than {len(str(scale)) - 1}")
    return int(scaled)


def floor_micro(value: Decimal, *, scale: int = MICRO) -> int:
    """``Decimal("4.1234567")`` → ``4_123_456``: an amount someone else reports (a provider's
    balance), in whole micro-units, rounded down. Exact amounts convert as :func:`to_micro` does;
    finer ones are not an error here, since the figure is read, not set."""
    if not value.is_finite():
        raise MoneyError(f"not a finite amount: {value!r}")
    with localcontext() as ctx:
        ctx.prec = len(value.as_tuple().digits) + len(str(scale))  # the product is exact
        return int((value * scale).to_integral_value(rounding=ROUND_FLOOR))


def usd(micro: int) -> str:
    """``1_500_000`` → ``"1.500000"`` (for messages and CSV; exact)."""
    sign = "-" if micro < 0 else ""
    whole, frac = divmod(abs(micro), MICRO)
    return f"{sign}{whole}.{frac:06d}"


def round_half_up(numerator: int, denominator: int) -> int:
    """The nearest integer to ``numerator / denominator`` (halves away from zero), exactly."""
    q, r = divmod(abs(numerator), denominator)
    if 2 * r >= denominator:
        q += 1
    return q if numerator >= 0 else -q
