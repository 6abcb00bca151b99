"""What ``vectorengine serve`` does once, before any worker starts.

Migrate the database, decide on the demo channel, upsert the configured channels and
tokens, and make sure an admin key exists. Secrets created here are returned so the caller
can show them exactly once.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import TYPE_CHECKING

import msgspec

from vectorengine.keys import ADMIN_KEY_META, generate_key, hash_key, key_hint
from vectorengine.settings import ChannelConfig, Settings

if TYPE_CHECKING:
    from vectorengine.store.repository import Store

DEMO_CHANNEL = "demo"
DEMO_MODELS = ["gpt-4o-mini", "gpt-4o", "gpt-3.5-turbo-instruct", "text-embedding-3-small"]
OPENAI_MODELS = [
    "gpt-4o-mini",
    "gpt-4o",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4.1-nano",
    "o4-mini",
    "gpt-3.5-turbo-instruct",
    "text-embedding-3-small",
    "text-embedding-3-large",
]


class Bootstrapped(msgspec.Struct, kw_only=True):
    settings: Settings  # the effective settings the workers run with
    admin_key: str | None = None  # set only when generated now
    new_token_keys: dict[str, str] = {}  # token name → key, generated now
    demo: bool = False


def effective_settings(settings: Settings, env: dict[str, str] | None = None) -> Settings:
    """Add the built-in channels when none is configured: a real OpenAI channel if
    ``OPENAI_API_KEY`` is set, else the clearly labelled ``demo`` channel backed by the simulator."""
    env = dict(os.environ) if env is None else env
    if settings.channels or settings.demo is False:
        return msgspec.structs.replace(settings, demo=bool(settings.demo))
    if env.get("OPENAI_API_KEY") and not settings.demo:
        real = ChannelConfig(
            name="openai",
            type="openai",
            base_url=env.get("OPENAI_BASE_URL", "https://api.openai.com/v1"),
            keys=[env["OPENAI_API_KEY"]],
            models=OPENAI_MODELS,
        )
        return msgspec.structs.replace(settings, channels=[real], demo=False)
    host = settings.host if settings.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    demo = ChannelConfig(
        name=DEMO_CHANNEL,
        type="openai",
        base_url=f"http://{host}:{settings.port}/_simulator/v1",
        keys=["demo-simulator-key"],
        models=DEMO_MODELS,
    )
    return msgspec.structs.replace(settings, channels=[demo], demo=True)


async def bootstrap(settings: Settings, env: dict[str, str] | None = None) -> Bootstrapped:
    # Imported here: the serving process imports this module only for ``Bootstrapped``.
    from vectorengine.store.engine import migrate_async
    from vectorengine.store.repository import Store

    eff = effective_settings(settings, env)
    await migrate_async(eff.database)
    store = Store.from_url(eff.database)
    try:
        out = Bootstrapped(settings=eff, demo=bool(eff.demo), new_token_keys={})
        await _sync_channels(store, eff)
        await _sync_tokens(store, eff, out)
        if not eff.admin_key and await store.get_meta(ADMIN_KEY_META) is None:
            key = generate_key().replace("sk-ve-", "sk-admin-")
            if await store.set_meta_if_absent(ADMIN_KEY_META, hash_key(key)):
                out.admin_key = key
        if eff.demo and not any(t.enabled for t in await store.list_tokens()):
            key = generate_key()
            await store.create_token(
                name="demo", key_hash=hash_key(key), key_hint=key_hint(key), managed_by="api"
            )
            out.new_token_keys["demo"] = key
        return out
    finally:
        await store.close()


async def _sync_channels(store: Store, settings: Settings) -> None:
    wanted = {ch.name for ch in settings.channels}
    for ch in settings.channels:
        await store.upsert_channel(msgspec.structs.asdict(ch), managed_by="config")
    # A channel that came from the config file and left it goes away with it.
    for existing in await store.list_channels():
        if existing.managed_by == "config" and existing.name not in wanted:
            await store.delete_channel(existing.id)


async def _sync_tokens(store: Store, settings: Settings, out: Bootstrapped) -> None:
    wanted = {t.name for t in settings.tokens}
    for tok in settings.tokens:
        existing = await store.find_token(name=tok.name)
        expires = tok.expires_at * 1000 if tok.expires_at is not None else None
        fields: dict[str, object] = {
            "models": tok.models,
            "enabled": tok.enabled,
            "expires_at": expires,
            "group": tok.group,
        }
        if tok.key is not None:
            fields |= {"key_hash": hash_key(tok.key), "key_hint": key_hint(tok.key)}
        if existing is None:
            key = tok.key or generate_key()
            await store.create_token(
                name=tok.name,
                key_hash=hash_key(key),
                key_hint=key_hint(key),
                models=tok.models,
                enabled=tok.enabled,
                expires_at=expires,
                group=tok.group,
                managed_by="config",
            )
            if tok.key is None:
                out.new_token_keys[tok.name] = key
        else:
            await store.update_token(existing.id, fields)
    # A token that came from the config file and left it is disabled, not deleted: its
    # usage records keep pointing at it.
    for existing in await store.list_tokens():
        if existing.managed_by == "config" and existing.name not in wanted and existing.enabled:
            await store.update_token(existing.id, {"enabled": False})


def main() -> None:
    """``python -m vectorengine.bootstrap``: settings JSON on stdin, :class:`Bootstrapped` JSON on stdout.

    ``vectorengine serve`` runs bootstrap in this child process so that the long-lived server
    process never imports the database and migration libraries (its memory stays small).
    """
    settings = msgspec.json.decode(sys.stdin.buffer.read(), type=Settings)
    result = asyncio.run(bootstrap(settings))
    sys.stdout.buffer.write(msgspec.json.encode(result))


if __name__ == "__main__":
    main()
