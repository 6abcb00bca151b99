"""``multipart/form-data`` request bodies (image edits, audio transcriptions and translations).

The gateway reads the text fields (the model above all) and the names of the file fields, and
passes the body on as it came. Mapping the model to the upstream's name edits that one field
in place; everything else, files included, stays byte for byte.
"""

from __future__ import annotations

import re

from python_multipart.multipart import MultipartParser, parse_options_header

MAX_FIELD_BYTES = 64 * 1024  # text fields are small; larger ones are not read into memory


class MultipartError(ValueError):
    pass


def boundary_of(content_type: str | None) -> bytes:
    kind, options = parse_options_header((content_type or "").encode("latin-1"))
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise MultipartError("The request body must be multipart/form-data with a boundary.")
    return boundary


def fields(raw: bytes, content_type: str | None) -> tuple[dict[str, str], set[str]]:
    """(text fields, names of the file fields) of a form; the last value of a repeated field."""
    boundary = boundary_of(content_type)
    texts: dict[str, str] = {}
    files: set[str] = set()
    state: dict[str, object] = {}
    header_field = bytearray()
    header_value = bytearray()
    value = bytearray()

    def on_part_begin() -> None:
        state.clear()
        value.clear()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_field.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        if bytes(header_field).lower() == b"content-disposition":
            _, options = parse_options_header(bytes(header_value))
            state["name"] = options.get(b"name", b"").decode("utf-8", "replace")
            state["file"] = b"filename" in options
        header_field.clear()
        header_value.clear()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if not state.get("file") and len(value) < MAX_FIELD_BYTES:
            value.extend(data[start:end])

    def on_part_end() -> None:
        name = str(state.get("name") or "")
        if state.get("file"):
            files.add(name)
        elif name:
            texts[name] = value.decode("utf-8", "replace")

    callbacks = {
        "on_part_begin": on_part_begin,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_part_data": on_part_data,
        "on_part_end": on_part_end,
    }
    parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
    try:
        parser.write(raw)
        parser.finalize()
    except Exception as exc:  # the parser's own error types vary between releases
        raise MultipartError(f"The multipart body could not be parsed: {exc}") from None
    if not texts and not files:
        raise MultipartError("The multipart body has no fields.")
    return texts, files


def set_field(raw: bytes, content_type: str | None, name: str, value: str) -> bytes:
    """The body with text field ``name`` set to ``value`` (added at the end if absent)."""
    boundary = re.escape(boundary_of(content_type))
    encoded = value.encode()
    part = re.compile(
        rb'(Content-Disposition:[ \t]*form-data;[ \t]*name="' + re.escape(name.encode()) + rb'"\r\n'
        rb"(?:[^\r\n]+\r\n)*\r\n)(.*?)(\r\n--" + boundary + rb")",
        re.IGNORECASE | re.DOTALL,
    )
    edited, count = part.subn(lambda m: m.group(1) + encoded + m.group(3), raw, count=1)
    if count:
        return edited
    closing = re.compile(rb"--" + boundary + rb"--\s*$")
    match = closing.search(raw)
    if match is None:
        raise MultipartError("The multipart body has no closing boundary.")
    added = (
        b"--" + boundary_of(content_type) + b'\r\nContent-Disposition: form-data; name="' + name.encode()
        + b'"\r\n\r\n' + encoded + b"\r\n"
    )  # fmt: skip
    return raw[: match.start()] + added + raw[match.start() :]
