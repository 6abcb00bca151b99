"""The OpenAI wire module: request decoding/re-encoding and the SSE observer."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vectorengine.protocol import openai as wire
from vectorengine.protocol.usage import Usage

USAGE = {
    "prompt_tokens": 11,
    "completion_tokens": 7,
    "total_tokens": 18,
    "prompt_tokens_details": {"cached_tokens": 3},
    "completion_tokens_details": {"reasoning_tokens": 2},
}


def chunk(delta: dict, finish: str | None = None, usage_member: bool = False) -> dict:
    obj = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    if usage_member:
        obj["usage"] = None
    return obj


def sse(objs: list[dict], usage: bool) -> bytes:
    """What an OpenAI upstream sends; ``usage`` = include_usage was requested."""
    out = [b"data: " + orjson.dumps(o) + b"\n\n" for o in objs]
    if usage:
        tail = {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [],
            "usage": USAGE,
        }
        out.append(b"data: " + orjson.dumps(tail) + b"\n\n")
    out.append(b"data: [DONE]\n\n")
    return b"".join(out)


texts = st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=8)


def events_for(pieces: list[str], usage_member: bool) -> list[dict]:
    evs = [chunk({"role": "assistant", "content": ""}, usage_member=usage_member)]
    evs += [chunk({"content": p}, usage_member=usage_member) for p in pieces]
    evs.append(chunk({}, "stop", usage_member=usage_member))
    return evs


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    parts, prev = [], 0
    for p in points:
        parts.append(data[prev:p])
        prev = p
    parts.append(data[prev:])
    return parts


def run(obs: wire.StreamObserver, parts: list[bytes]) -> bytes:
    return b"".join(obs.feed(p) for p in parts) + obs.tail()


@settings(max_examples=200, deadline=None)
@given(pieces=texts, cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_client_asked_for_usage_stream_passes_byte_for_byte(pieces: list[str], cuts: list[int]) -> None:
    upstream = sse(events_for(pieces, usage_member=True), usage=True)
    obs = wire.StreamObserver(strip_usage=False)
    assert run(obs, split_at(upstream, cuts)) == upstream
    assert obs.usage == Usage(11, 7, 3, 2)
    assert obs.done


@settings(max_examples=200, deadline=None)
@given(pieces=texts, cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_injected_usage_is_stripped_so_the_client_sees_the_plain_stream(
    pieces: list[str], cuts: list[int]
) -> None:
    # The gateway asked upstream for usage; the client did not. It must receive exactly what
    # an upstream sends without include_usage, however the bytes are split on the way.
    upstream = sse(events_for(pieces, usage_member=True), usage=True)
    expected = sse(events_for(pieces, usage_member=False), usage=False)
    obs = wire.StreamObserver(strip_usage=True)
    assert run(obs, split_at(upstream, cuts)) == expected
    assert obs.usage == Usage(11, 7, 3, 2)
    text = "".join(
        orjson.loads(line[6:])["choices"][0]["delta"].get("content", "")
        for line in expected.split(b"\n\n")
        if line.startswith(b"data: {")
    )
    assert text == "".join(pieces)


@settings(max_examples=100, deadline=None)
@given(pieces=texts, strip=st.booleans())
def test_one_event_per_read_as_upstreams_send_them(pieces: list[str], strip: bool) -> None:
    # The shape a live stream usually has: every read is exactly one event (the observer's
    # fast path). The client still gets exactly the plain stream, or the upstream's bytes.
    events = events_for(pieces, usage_member=True)
    upstream = sse(events, usage=True)
    parts = [p + b"\n\n" for p in upstream.split(b"\n\n")[:-1]]
    obs = wire.StreamObserver(strip_usage=strip)
    expected = sse(events_for(pieces, usage_member=False), usage=False) if strip else upstream
    assert run(obs, parts) == expected
    assert obs.usage == Usage(11, 7, 3, 2) and obs.done and obs.error is None


def test_an_error_event_mid_stream_is_seen_even_in_the_mid_stream_shape() -> None:
    obs = wire.StreamObserver(strip_usage=True)
    obs.feed(b"data: " + orjson.dumps(chunk({"content": "x"}, usage_member=True)) + b"\n\n")
    assert obs.content_seen
    err = b'data: {"error":{"message":"boom","type":"server_error"},"usage":null}\n\n'
    obs.feed(err)
    assert obs.error == {"message": "boom", "type": "server_error"}


def test_usage_on_a_content_chunk_is_removed_but_content_kept() -> None:
    obj = chunk({"content": "hi"}, "stop")
    obj["usage"] = USAGE
    obs = wire.StreamObserver(strip_usage=True)
    out = obs.feed(b"data: " + orjson.dumps(obj) + b"\n\ndata: [DONE]\n\n")
    first = orjson.loads(out.split(b"\n\n")[0][6:])
    assert "usage" not in first and first["choices"][0]["delta"]["content"] == "hi"
    assert obs.usage == Usage(11, 7, 3, 2)


def test_crlf_framing_and_inband_error() -> None:
    obs = wire.StreamObserver(strip_usage=False)
    obs.feed(b'data: {"error":{"message":"boom","type":"server_error","param":null,"code":null}}\r\n\r\n')
    assert obs.error is not None and obs.error["message"] == "boom"
    assert not obs.done


def test_content_seen_ignores_the_empty_role_chunk() -> None:
    obs = wire.StreamObserver(strip_usage=False)
    obs.feed(b"data: " + orjson.dumps(chunk({"role": "assistant", "content": ""})) + b"\n\n")
    assert not obs.content_seen
    obs.feed(b"data: " + orjson.dumps(chunk({"content": "x"})) + b"\n\n")
    assert obs.content_seen


def test_decode_and_encode_upstream() -> None:
    raw = b'{"model":"a","messages":[{"role":"user","content":"x"}],"weird_field":{"k":1}}'
    call = wire.decode(wire.Endpoint.CHAT, raw)
    assert (call.model, call.stream, call.include_usage) == ("a", False, False)
    assert wire.encode_upstream(call, "a") is raw  # untouched bytes when nothing changes
    mapped = orjson.loads(wire.encode_upstream(call, "b"))
    assert mapped["model"] == "b" and mapped["weird_field"] == {"k": 1}
    s = wire.decode(
        wire.Endpoint.CHAT, b'{"model":"a","messages":[{}],"stream":true,"stream_options":{"x":1}}'
    )
    body = orjson.loads(wire.encode_upstream(s, "a"))
    assert body["stream_options"] == {"x": 1, "include_usage": True}


@pytest.mark.parametrize(
    ("endpoint", "raw", "param", "bad_json"),
    [
        (wire.Endpoint.CHAT, b"{not json", None, True),
        (wire.Endpoint.CHAT, b"[1]", None, True),
        (wire.Endpoint.CHAT, b'{"messages":[]}', "model", False),
        (wire.Endpoint.CHAT, b'{"model":"a"}', "messages", False),
        (wire.Endpoint.CHAT, b'{"model":"a","messages":[]}', "messages", False),
        (wire.Endpoint.CHAT, b'{"model":"a","messages":"hi"}', "messages", False),
        (wire.Endpoint.COMPLETIONS, b'{"model":"a"}', "prompt", False),
        (wire.Endpoint.EMBEDDINGS, b'{"model":"a","input":5}', "input", False),
    ],
)
def test_decode_errors_name_the_parameter(
    endpoint: wire.Endpoint, raw: bytes, param: str | None, bad_json: bool
) -> None:
    with pytest.raises(wire.DecodeError) as info:
        wire.decode(endpoint, raw)
    assert info.value.param == param and info.value.bad_json is bad_json


def test_embeddings_never_stream() -> None:
    call = wire.decode(wire.Endpoint.EMBEDDINGS, b'{"model":"e","input":"x","stream":true}')
    assert not call.stream


def test_spaced_usage_null_is_stripped_on_the_fast_path() -> None:
    obs = wire.StreamObserver(strip_usage=True)
    obs.feed(b'data: {"choices":[{"delta":{"content":"a"}}], "usage": null}\n\n')
    assert obs.content_seen
    out = obs.feed(b'data: {"choices":[{"delta":{"content":"b"}}], "usage": null}\n\n')
    assert out == b'data: {"choices":[{"delta":{"content":"b"}}]}\n\n'


def test_a_stream_that_begins_with_an_error_event_is_recognised() -> None:
    from vectorengine.protocol.openai import leading_error

    err = b'data: {"error":{"message":"overloaded","type":"server_error","code":null}}\n\n'
    assert leading_error(err) == {"message": "overloaded", "type": "server_error", "code": None}
    assert leading_error(b'data: {"error": trunc') == {
        "message": "The upstream stream began with an error event."
    }
    role = b'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}\n\n'
    assert leading_error(role) is None
    assert leading_error(b": keep-alive\n\n") is None
