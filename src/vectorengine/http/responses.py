"""``GET /v1/responses/{id}``: a stored response, from the upstream that keeps it.

The gateway keeps no copy: it asks the Responses-capable channels the caller's token can
reach, in priority order and key by key, until one knows the id (a 404 means "not here").
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

from vectorengine import auth
from vectorengine.errors import GatewayError, Kind
from vectorengine.http.rsgi import send_error
from vectorengine.store.snapshot import SnapshotHolder
from vectorengine.upstreams.dialect import auth_headers, base_url
from vectorengine.upstreams.registry import UPSTREAM_TYPES
from vectorengine.upstreams.transport import Transport


async def retrieve(
    snapshots: SnapshotHolder,
    transport: Transport,
    scope: Any,
    protocol: Any,
    request_id: str,
    response_id: str,
) -> None:
    rid = [("x-request-id", request_id)]
    try:
        snapshot = snapshots.current
        token = auth.authenticate(
            snapshot, auth.bearer(scope.headers.get("authorization")), time.time_ns() // 1_000_000
        )
        routes = snapshot.routes_for(token)
        channels: dict[int, tuple[int, Any]] = {}
        for model in snapshot.models_for(token):
            for tier in routes[model].tiers:
                for candidate in tier.candidates:
                    if UPSTREAM_TYPES[candidate.channel.type].responses:
                        channels.setdefault(candidate.channel.id, (tier.priority, candidate.channel))
        last: GatewayError | None = None
        for _, channel in sorted(channels.values(), key=lambda pc: -pc[0]):
            utype = UPSTREAM_TYPES[channel.type]
            url = f"{base_url(channel, utype)}/responses/{quote(response_id, safe='')}"
            for key in channel.keys:
                try:
                    resp = await transport.send("GET", url, auth_headers(utype, key), b"")
                    body = bytes(await resp.read())
                except Exception as exc:  # an unreachable channel: try the next
                    last = GatewayError(Kind.UPSTREAM_UNREACHABLE, f"{channel.name}: {type(exc).__name__}")
                    continue
                if resp.status == 404:
                    continue
                ctype = resp.header("content-type") or "application/json"
                protocol.response_bytes(resp.status, [*rid, ("content-type", ctype)], body)
                return
        if last is not None:
            raise last
        raise GatewayError(
            Kind.NOT_FOUND, f"Response with id '{response_id}' not found.", param="response_id"
        )
    except GatewayError as err:
        send_error(protocol, err, rid)
