"""Who is calling and may they use this model. Reads only the in-memory snapshot."""

from __future__ import annotations

from vectorengine.errors import GatewayError, Kind
from vectorengine.keys import hash_key, key_hint
from vectorengine.store.records import Token
from vectorengine.store.snapshot import Snapshot


def bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


def authenticate(snapshot: Snapshot, key: str | None, now_ms: int) -> Token:
    if key is None:
        raise GatewayError(
            Kind.MISSING_API_KEY,
            "You didn't provide an API key. You need to provide your API key in an Authorization header "
            "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        )
    token = snapshot.tokens_by_hash.get(hash_key(key))
    if token is None:
        raise GatewayError(Kind.INVALID_API_KEY, f"Incorrect API key provided: {key_hint(key)}.")
    if not token.enabled:
        raise GatewayError(Kind.KEY_DISABLED, "This API key has been disabled.")
    if token.expires_at is not None and token.expires_at <= now_ms:
        raise GatewayError(Kind.KEY_EXPIRED, "This API key has expired.")
    return token


def authorize_model(token: Token, model: str) -> None:
    if token.models is not None and model not in token.models:
        raise GatewayError(
            Kind.MODEL_NOT_ALLOWED, f"This API key is not allowed to use the model `{model}`.", param="model"
        )
