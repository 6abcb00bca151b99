"""Validate JSON against the official OpenAI OpenAPI spec (``#/components/schemas/<name>``).

The spec is ``<repo root>/../shared/specs/openai-openapi.yaml`` (or ``$VE_SPECS_DIR/openai-openapi.yaml``).
Parsing its 3 MB of YAML takes most of a second, so the parsed document is cached as JSON in
the temp directory, keyed by the file's path, size and mtime.

The spec mixes OpenAPI 3.0's ``nullable: true`` into 3.1 schemas; JSON Schema 2020-12 ignores
that keyword, so the cached copy rewrites every ``{..., nullable: true}`` into
``{anyOf: [{...}, {type: null}]}`` — which is what the spec means.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import orjson
import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, relevance
from referencing import Registry
from referencing.jsonschema import DRAFT202012

SPECS_ENV = "VE_SPECS_DIR"
SPEC_FILE = "openai-openapi.yaml"
_DOC_URI = "urn:vectorengine:openai-openapi"
_CACHE_FORMAT = 1  # bump when the rewriting below changes


class SchemaMismatch(AssertionError):
    """An instance does not match a schema of the spec."""


def specs_dir() -> Path:
    """The official specs and recorded fixtures: ``$VE_SPECS_DIR``, else ``<repo root>/../shared/specs``."""
    configured = os.environ.get(SPECS_ENV)
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[2].parent / "shared" / "specs"


def spec_path() -> Path:
    return specs_dir() / SPEC_FILE


def _nullable_to_any_of(node: Any) -> Any:
    if isinstance(node, list):
        return [_nullable_to_any_of(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: _nullable_to_any_of(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable") is True:
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


@functools.cache
def load_document() -> dict[str, Any]:
    """The whole spec as a dict (nullable rewritten), from the JSON cache when fresh."""
    path = spec_path()
    if not path.is_file():
        raise FileNotFoundError(f"OpenAI OpenAPI spec not found at {path} (set ${SPECS_ENV} to its folder)")
    stat = path.stat()
    tag = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{_CACHE_FORMAT}"
    cache = (
        Path(tempfile.gettempdir())
        / f"vectorengine-openapi-{hashlib.sha256(tag.encode()).hexdigest()[:16]}.json"
    )
    try:
        cached: dict[str, Any] = json.loads(cache.read_bytes())  # not orjson: the spec has >64-bit ints
        return cached
    except (OSError, ValueError):
        pass
    with path.open("rb") as handle:
        document = _nullable_to_any_of(yaml.load(handle, Loader=yaml.CSafeLoader))
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(document, default=str))
        os.replace(tmp, cache)
    except OSError:
        tmp.unlink(missing_ok=True)
    result: dict[str, Any] = document
    return result


@functools.cache
def _registry() -> Registry[Any]:
    resource = DRAFT202012.create_resource(load_document())
    registry: Registry[Any] = Registry().with_resource(_DOC_URI, resource)
    return registry


@functools.cache
def validator(schema_name: str) -> Draft202012Validator:
    schemas = load_document()["components"]["schemas"]
    if schema_name not in schemas:
        raise KeyError(f"no schema {schema_name!r} in #/components/schemas of {spec_path()}")
    schema = {"$ref": f"{_DOC_URI}#/components/schemas/{schema_name}"}
    return Draft202012Validator(schema, registry=_registry())


def _describe(error: ValidationError) -> str:
    where = error.json_path
    return f"  at {where}: {error.message[:300]}"


def validate(instance: Any, schema_name: str) -> None:
    """Raise :class:`SchemaMismatch` unless ``instance`` matches ``#/components/schemas/<schema_name>``."""
    errors = sorted(validator(schema_name).iter_errors(instance), key=relevance, reverse=True)
    if not errors:
        return
    shown = "\n".join(_describe(e) for e in errors[:5])
    more = f"\n  … and {len(errors) - 5} more" if len(errors) > 5 else ""
    excerpt = orjson.dumps(instance).decode()[:600]
    raise SchemaMismatch(f"instance does not match {schema_name}:\n{shown}{more}\ninstance: {excerpt}")
