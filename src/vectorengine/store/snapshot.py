"""The in-memory snapshot the hot path reads: tokens, channels and model routes.

A request never waits on the database: it reads :attr:`SnapshotHolder.current`, which a
background task swaps for a new immutable :class:`Snapshot` whenever the store's revision
counter moves (changes made here are applied at once; changes made by other workers,
instances or the CLI within ``poll_s``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from vectorengine.routing.selection import RouteTable, routes_by_group
from vectorengine.store.records import Channel, Token
from vectorengine.store.repository import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Snapshot:
    revision: int
    tokens_by_hash: dict[str, Token]
    channels: dict[int, Channel]
    routes: dict[str, dict[str, RouteTable]]  # token group → model → route table

    @classmethod
    def build(
        cls,
        revision: int,
        tokens: list[Token],
        channels: list[Channel],
        group_map: Mapping[str, Iterable[str]] | None = None,
    ) -> Snapshot:
        return cls(
            revision=revision,
            tokens_by_hash={t.key_hash: t for t in tokens},
            channels={c.id: c for c in channels},
            routes=routes_by_group(channels, (t.group for t in tokens), group_map or {}),
        )

    def routes_for(self, token: Token) -> dict[str, RouteTable]:
        return self.routes.get(token.group) or {}

    def models_for(self, token: Token) -> list[str]:
        routes = self.routes_for(token)
        allowed = routes.keys() if token.models is None else set(token.models) & routes.keys()
        return sorted(allowed)


class SnapshotHolder:
    def __init__(
        self, store: Store, poll_s: float = 1.0, group_map: Mapping[str, Iterable[str]] | None = None
    ) -> None:
        self._store = store
        self._poll_s = poll_s
        self._group_map = group_map or {}
        self._lock = asyncio.Lock()
        self.current = Snapshot.build(0, [], [], self._group_map)

    async def load(self) -> Snapshot:
        """Read everything now and swap it in (used at start and after local changes)."""
        async with self._lock:
            revision = await self._store.revision()
            tokens = await self._store.list_tokens()
            channels = await self._store.list_channels()
            self.current = Snapshot.build(revision, tokens, channels, self._group_map)
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
