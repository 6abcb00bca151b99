"""The admin API's OpenAPI 3.1 document, generated from its route table and body types."""

from __future__ import annotations

import functools
from typing import Any

import msgspec

from vectorengine import __version__
from vectorengine.http import admin_schema as s
from vectorengine.http.admin_api import ROUTES

_REF = "#/components/schemas/{name}"


@functools.cache
def document() -> dict[str, Any]:
    types: list[Any] = [s.ErrorOut]
    for r in ROUTES:
        types += [t for t in (r.request, r.response) if t is not None]
    schemas, components = msgspec.json.schema_components(types, ref_template=_REF)
    by_type = dict(zip(types, schemas, strict=True))
    error = {"content": {"application/json": {"schema": by_type[s.ErrorOut]}}}
    paths: dict[str, dict[str, Any]] = {}
    for r in ROUTES:
        op: dict[str, Any] = {
            "summary": r.summary,
            "operationId": r.handler.__name__,
            "parameters": [
                {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                for p in _path_params(r.path)
            ]
            + [
                {"name": name, "in": "query", "required": False, "schema": {"type": typ}, "description": desc}
                for name, typ, desc in r.query
            ],
            "responses": {
                str(r.status): (
                    {"description": "OK", "content": {"application/json": {"schema": by_type[r.response]}}}
                    if r.response is not None
                    else {"description": "No content"}
                ),
                "400": {"description": "Invalid request", **error},
                "401": {"description": "Missing or wrong admin key", **error},
                "404": {"description": "Not found", **error},
            },
        }
        if r.request is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": by_type[r.request]}},
            }
        paths.setdefault(r.path, {})[r.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "VectorEngine admin API", "version": __version__},
        "components": {
            "schemas": components,
            "securitySchemes": {"adminKey": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"adminKey": []}],
        "paths": paths,
    }


def _path_params(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]
