"""Money: prices, the cost of a request, balances, spend caps and rate limits.

Amounts are integers of micro-USD everywhere (``*_micro``); prices are integers of micro-USD
per million tokens, so a price written ``0.15`` in USD per 1M tokens is ``150_000``.
"""
