"""The in-memory snapshot the hot path reads: tokens, users, groups, prices, channels, routes.

A request never waits on the database: it reads :attr:`SnapshotHolder.current`, which a
background task swaps for a new immutable :class:`Snapshot` whenever the store's revision
counter moves (changes made here are applied at once; changes made by other workers,
instances or the CLI within ``poll_s``). Balances are not in it: they live in the meter.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import msgspec

from vectorengine.billing.prices import PPM, Price, PriceBook
from vectorengine.routing.selection import RouteTable, routes_by_group
from vectorengine.store.records import Channel, Group, Token, User
from vectorengine.store.repository import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Snapshot:
    revision: int
    tokens_by_hash: dict[str, Token]
    channels: dict[int, Channel]
    routes: dict[str, dict[str, RouteTable]]  # token group → model → route table
    tokens_by_id: dict[int, Token] = field(default_factory=dict)
    users: dict[int, User] = field(default_factory=dict)
    groups: dict[str, Group] = field(default_factory=dict)
    prices: PriceBook = field(default_factory=lambda: PriceBook({}, {}))

    @classmethod
    def build(
        cls,
        revision: int,
        tokens: list[Token],
        channels: list[Channel],
        users: list[User] | None = None,
        groups: list[Group] | None = None,
        prices: PriceBook | None = None,
    ) -> Snapshot:
        users_by_id = {u.id: u for u in users or ()}
        # A user's tokens route (and are priced) by the user's group.
        tokens = [
            msgspec.structs.replace(t, group=users_by_id[t.user_id].group)
            if t.user_id is not None and t.user_id in users_by_id
            else t
            for t in tokens
        ]
        groups_by_name = {g.name: g for g in groups or ()}
        group_map = {g.name: g.channel_groups for g in groups_by_name.values() if g.channel_groups}
        return cls(
            revision=revision,
            tokens_by_hash={t.key_hash: t for t in tokens},
            tokens_by_id={t.id: t for t in tokens},
            channels={c.id: c for c in channels},
            routes=routes_by_group(channels, (t.group for t in tokens), group_map),
            users=users_by_id,
            groups=groups_by_name,
            prices=prices or PriceBook({}, {}),
        )

    def routes_for(self, token: Token) -> dict[str, RouteTable]:
        return self.routes.get(token.group) or {}

    def models_for(self, token: Token) -> list[str]:
        routes = self.routes_for(token)
        allowed = routes.keys() if token.models is None else set(token.models) & routes.keys()
        return sorted(allowed)

    def multiplier_ppm(self, token: Token) -> int:
        group = self.groups.get(token.group)
        return group.multiplier_ppm if group is not None else PPM


class SnapshotHolder:
    def __init__(
        self, store: Store, poll_s: float = 1.0, default_prices: Mapping[str, Price] | None = None
    ) -> None:
        self._store = store
        self._poll_s = poll_s
        self._defaults = dict(default_prices or {})
        self._lock = asyncio.Lock()
        self.current = Snapshot.build(0, [], [])

    async def load(self) -> Snapshot:
        """Read everything now and swap it in (used at start and after local changes)."""
        async with self._lock:
            revision = await self._store.revision()
            tokens = await self._store.list_tokens()
            channels = await self._store.list_channels()
            accounts = self._store.accounts
            users = await accounts.list_users()
            groups = await accounts.list_groups()
            prices = PriceBook(self._defaults, await accounts.prices())
            self.current = Snapshot.build(revision, tokens, channels, users, groups, prices)
            return self.current

    async def refresh_if_changed(self) -> bool:
        if await self._store.revision() == self.current.revision:
            return False
        await self.load()
        return True

    async def run(self) -> None:
        """Poll the revision counter forever; a slow or locked database only delays refreshes."""
        while True:
            await asyncio.sleep(self._poll_s)
            try:
                await self.refresh_if_changed()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("snapshot refresh failed (serving the previous one): %s", exc)
