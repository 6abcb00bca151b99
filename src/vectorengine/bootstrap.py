"""What ``vectorengine serve`` does once, before any worker starts.

Migrate the database, decide on the demo channel, upsert the configured channels and
tokens, and make sure an admin key exists. Secrets created here are returned so the caller
can show them exactly once.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import sys
from typing import TYPE_CHECKING, Any

import msgspec

from vectorengine.billing.money import to_micro
from vectorengine.keys import ADMIN_KEY_META, generate_key, hash_key, key_hint
from vectorengine.settings import (
    ChannelConfig,
    ConfigError,
    Settings,
    encode_settings,
    load_settings,
)

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
        await _sync_accounts(store, eff)
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
        await store.upsert_channel(ch.stored(), managed_by="config")
    # A channel that came from the config file and left it goes away with it.
    for existing in await store.list_channels():
        if existing.managed_by == "config" and existing.name not in wanted:
            await store.delete_channel(existing.id)


async def _sync_accounts(store: Store, settings: Settings) -> None:
    """Groups, users (and their initial balance, once) and prices from the config file."""
    accounts = store.accounts
    for grp in settings.groups:
        await accounts.upsert_group(grp.name, to_micro(grp.multiplier), grp.channel_groups, "config")
    for cfg in settings.users:
        user = await accounts.find_user(cfg.name)
        if user is None:
            user = await accounts.create_user(cfg.name, cfg.group, cfg.limits(), cfg.enabled, "config")
        else:
            changes = {"group": cfg.group, "limits": cfg.limits(), "enabled": cfg.enabled}
            await accounts.update_user(user.id, changes)
        if cfg.initial_balance_usd is not None:
            amount = to_micro(cfg.initial_balance_usd)
            await accounts.append(
                user.id, "initial", amount, "initial_balance_usd in the config file", once=True
            )
    stored = await accounts.price_sources()
    for model, price in settings.prices.items():
        await accounts.set_price(model, price.to_price(), "config")
    for model, source in stored.items():  # a price that left the config file goes with it
        if source == "config" and model not in settings.prices:
            await accounts.delete_price(model)


async def _user_id(store: Store, name: str | None, where: str) -> int | None:
    if name is None:
        return None
    user = await store.accounts.find_user(name)
    if user is None:
        raise ConfigError(f"{where}.user: no user named {name!r}")
    return user.id


async def _sync_tokens(store: Store, settings: Settings, out: Bootstrapped) -> None:
    wanted = {t.name for t in settings.tokens}
    for i, tok in enumerate(settings.tokens):
        existing = await store.find_token(name=tok.name)
        expires = tok.expires_at * 1000 if tok.expires_at is not None else None
        user_id = await _user_id(store, tok.user, f"$.tokens[{i}]")
        quota = to_micro(tok.quota_usd) if tok.quota_usd is not None else None
        fields: dict[str, object] = {
            "models": tok.models,
            "enabled": tok.enabled,
            "expires_at": expires,
            "group": tok.group,
            "user_id": user_id,
            "quota_micro_usd": quota,
            "limits": tok.limits(),
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
                user_id=user_id,
                quota_micro_usd=quota,
                limits=tok.limits(),
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


class ServeRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What ``vectorengine serve`` was asked for: the config file and the command-line overrides."""

    config: str | None = None
    listen: str | None = None
    workers: int | None = None


class Serving(msgspec.Struct, kw_only=True):
    """What the serving process needs to start Granian, decided here."""

    settings_json: str  # the effective settings, handed to the workers
    host: str
    port: int
    workers: int
    banner: list[str]  # printed once by the serving process


class StartError(Exception):
    """The gateway cannot start as asked (the message says why)."""


def prepare(req: ServeRequest) -> Serving:
    """Validate the configuration, check the address, migrate and seed; say what to start."""
    settings = load_settings(req.config)
    overrides: dict[str, Any] = {}
    if req.listen:
        overrides["listen"] = req.listen
    if req.workers:
        overrides["workers"] = req.workers
    if overrides:
        settings = msgspec.structs.replace(settings, **overrides)
    if settings.workers > 1 and settings.redis is None:
        raise StartError(
            f"--workers {settings.workers} needs `redis:` in the config file: balances, spend caps and "
            "rate limits must be shared by the workers"
        )
    check_port_free(settings.host, settings.port)
    boot = asyncio.run(bootstrap(settings))
    eff = boot.settings
    return Serving(
        settings_json=encode_settings(eff).decode(),
        host=eff.host,
        port=eff.port,
        workers=eff.workers,
        banner=_banner(boot),
    )


def _banner(boot: Bootstrapped) -> list[str]:
    eff = boot.settings
    shown_host = eff.host if eff.host not in ("0.0.0.0", "::") else "127.0.0.1"
    lines = [f"VectorEngine listening on http://{shown_host}:{eff.port}  (database: {_redact(eff.database)})"]
    if boot.demo:
        lines.append(
            "DEMO MODE: no provider is configured, so the `demo` channel answers from the built-in "
            "simulator (not a real model). Set OPENAI_API_KEY or add channels to a config file."
        )
    if boot.admin_key:
        lines.append(f"Admin key (shown once, keep it): {boot.admin_key}")
    for name, key in boot.new_token_keys.items():
        lines.append(f"API key for token '{name}' (shown once, keep it): {key}")
    if boot.demo and boot.new_token_keys:
        key = next(iter(boot.new_token_keys.values()))
        body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello"}]}'
        lines.append(
            f"Try it:  curl http://{shown_host}:{eff.port}/v1/chat/completions "
            f"-H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' -d '{body}'"
        )
    return lines


def _redact(url: str) -> str:
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def check_port_free(host: str, port: int) -> None:
    """Refuse a port something already listens on.

    Granian binds with SO_REUSEPORT, so without this check a second server on the same port
    would start without complaint and silently share the traffic with the first one.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR: connections left in TIME_WAIT by a previous run must not block a restart;
        # an active listener still makes the bind fail.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise StartError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def main() -> None:
    """``python -m vectorengine.bootstrap``: a :class:`ServeRequest` as JSON on stdin, a
    :class:`Serving` as JSON on stdout; exit status 2 for a configuration error, 1 for others.

    ``vectorengine serve`` runs this in a child process so that the long-lived serving process
    imports neither the configuration nor the database and migration libraries: it only
    supervises Granian's workers, and its memory stays small.
    """
    req = msgspec.json.decode(sys.stdin.buffer.read(), type=ServeRequest)
    try:
        serving = prepare(req)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except StartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    sys.stdout.buffer.write(msgspec.json.encode(serving))


if __name__ == "__main__":
    main()
