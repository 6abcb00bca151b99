"""The conformance matrix: every client protocol × every upstream type × the same scenarios.

One gateway, one simulator (which speaks OpenAI, Azure, Anthropic and Gemini on one port), and
the official SDKs as clients. Where a pair cannot do a scenario because one side lacks the
feature, the skip names why; docs/protocols.md keeps the same table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conformance.clients import AnthropicClient, Ask, Client, GeminiClient, OpenAIClient
from tests.support.gateway import GatewayProcess, start_gateway
from tests.support.procs import SimHandle, start_simulator, unique_key

KEY = "sk-conformance-0123456789abcdef"
INGRESSES = ("openai", "anthropic", "gemini")
UPSTREAMS: dict[str, dict[str, Any]] = {
    "openai": {"type": "openai", "path": "/v1", "model": "gpt-4o", "thinker": "o3-mini"},
    "azure": {"type": "azure", "path": "", "model": "prod-gpt4o", "thinker": "o3-mini"},
    "anthropic": {"type": "anthropic", "path": "", "model": "claude-opus-4-7", "thinker": "claude-opus-4-7"},
    "gemini": {"type": "gemini", "path": "", "model": "gemini-2.0-flash", "thinker": "gemini-2.5-flash"},
}
LONG = " ".join(f"fact{i} holds." for i in range(700))  # about 2,100 tokens: long enough to be cached
# (ingress, upstream, scenario) → why that pair cannot run it; docs/protocols.md has the same table
SKIPS: dict[tuple[str, str, str], str] = {}


def _channel(name: str, upstream: str, sim: SimHandle, key: str, target: str) -> dict[str, Any]:
    spec = UPSTREAMS[upstream]
    return {
        "name": name,
        "type": spec["type"],
        "base_url": sim.root_url + spec["path"],
        "keys": [key],
        "models": [name],
        "model_map": {name: target},
    }


@pytest.fixture(scope="module")
def sim() -> Iterator[SimHandle]:
    handle = start_simulator()
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="module")
def gw(sim: SimHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    channels = []
    for u, spec in UPSTREAMS.items():
        channels.append(_channel(u, u, sim, unique_key(f"sk-{u}"), spec["model"]))
        channels.append(_channel(f"{u}-think", u, sim, unique_key(f"sk-{u}"), spec["thinker"]))
        channels.append(_channel(f"{u}-bad", u, sim, unique_key("fault-400"), spec["model"]))
        for ingress in INGRESSES:
            channels.append(_channel(f"{u}-busy-{ingress}", u, sim, unique_key("fault-429"), spec["model"]))
    config = {
        "channels": channels,
        "tokens": [{"name": "conformance", "key": KEY}],
        "routing": {"max_attempts": 2, "capacity_wait_ms": 0},
    }
    g = start_gateway(tmp_path_factory.mktemp("conformance"), config)
    try:
        yield g
    finally:
        g.stop()


CLIENTS: dict[str, Callable[[GatewayProcess], Client]] = {
    "openai": lambda gw: OpenAIClient(gw.base_url, KEY),
    "anthropic": lambda gw: AnthropicClient(gw.url, KEY),
    "gemini": lambda gw: GeminiClient(gw.url, KEY),
}
PAIRS = [pytest.param(i, u, id=f"{i}-to-{u}") for i in INGRESSES for u in UPSTREAMS]


def _skip(ingress: str, upstream: str, scenario: str) -> None:
    reason = SKIPS.get((ingress, upstream, scenario))
    if reason:
        pytest.skip(reason)


@pytest.fixture
def client(request: pytest.FixtureRequest, gw: GatewayProcess) -> Client:
    return CLIENTS[request.node.callspec.params["ingress"]](gw)


@pytest.mark.parametrize(("ingress", "upstream"), PAIRS)
def test_text(client: Client, ingress: str, upstream: str) -> None:
    out = client.ask(upstream, Ask(prompt="Hello there, gateway"))
    assert '"Hello there, gateway"' in out.text and out.finish == "stop"
    assert out.usage is not None and out.usage.prompt > 0 and out.usage.completion > 0
    assert out.calls == []


@pytest.mark.parametrize(("ingress", "upstream"), PAIRS)
def test_streaming_matches_the_json_answer(client: Client, ingress: str, upstream: str) -> None:
    whole = client.ask(upstream, Ask(prompt="Stream this answer"))
    streamed = client.ask(upstream, Ask(prompt="Stream this answer", stream=True))
    assert streamed.text == whole.text and streamed.finish == "stop"
    assert streamed.usage is not None and whole.usage is not None
    assert (streamed.usage.prompt, streamed.usage.completion) == (whole.usage.prompt, whole.usage.completion)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize(("ingress", "upstream"), PAIRS)
def test_tool_call_and_its_result(client: Client, ingress: str, upstream: str, stream: bool) -> None:
    first, second = client.tool_round_trip(upstream, stream)
    assert first.finish == "tool_calls"
    assert first.calls == [("get_weather", {"city": "Paris"})]
    assert "22 degrees and sunny" in second.text and second.finish == "stop"


@pytest.mark.parametrize(("ingress", "upstream"), PAIRS)
def test_image_input(client: Client, ingress: str, upstream: str) -> None:
    plain = client.ask(upstream, Ask(prompt="Describe this picture"))
    pictured = client.ask(upstream, Ask(prompt="Describe this picture", image=True))
    assert '"Describe this picture"' in pictured.text
    assert pictured.usage is not None and plain.usage is not None
    assert pictured.usage.prompt > plain.usage.prompt + 50  # the image was sent and counted


@pytest.mark.parametrize(("ingress", "upstream"), PAIRS)
def test_reasoning(client: Client, ingress: str, upstream: str) -> None:
    out = client.ask(f"{upstream}-think", Ask(prompt="Think first", reasoning=True))
    plain = client.ask(upstream, Ask(prompt="Think first"))
    assert '"Think first"' in out.text and out.usage is not None and plain.usage is not None
    if out.usage.reasoning is not None:
        assert out.usage.reasoning > 0
    assert out.usage.completion > plain.usage.completion  # thinking is billed as output
    if upstream in ("anthropic", "gemini"):
        assert out.reasoning  # these upstreams show their thoughts, and every client protocol carries them


@pytest.mark.parametrize(("ingress", "upstream"), PAIRS)
def test_stop_reasons(client: Client, ingress: str, upstream: str) -> None:
    short = client.ask(upstream, Ask(prompt="Hello there", max_tokens=3))
    assert short.finish == "length" and short.usage is not None and short.usage.completion == 3
    stopped = client.ask(upstream, Ask(prompt="Hello there", stop=["reply"]))
    assert stopped.finish == "stop" and "reply" not in stopped.text and stopped.text
    refused = client.ask(upstream, Ask(prompt="[sim:refuse] now"))
    assert refused.finish == "content_filter" and refused.text == ""


@pytest.mark.parametrize(("ingress", "upstream"), PAIRS)
def test_cached_tokens_are_reported_once(client: Client, ingress: str, upstream: str) -> None:
    _skip(ingress, upstream, "cached")
    prefix = LONG + unique_key()
    first = client.ask(upstream, Ask(prompt="First question", cache_prefix=prefix))
    second = client.ask(upstream, Ask(prompt="Second question", cache_prefix=prefix))
    assert first.usage is not None and second.usage is not None
    assert first.usage.cached == 0 and second.usage.cached > 1000
    assert second.usage.cached <= second.usage.prompt  # cached tokens are part of the prompt, not added
    assert abs(second.usage.prompt - first.usage.prompt) < 10


@pytest.mark.parametrize(("ingress", "upstream"), PAIRS)
def test_upstream_error_reaches_the_client_in_its_envelope(
    client: Client, ingress: str, upstream: str
) -> None:
    with pytest.raises(Exception) as caught:
        client.ask(f"{upstream}-bad", Ask())
    status, message = client.error_of(caught.value)
    assert status == 400 and "the simulator rejected this request" in message


@pytest.mark.parametrize(("ingress", "upstream"), PAIRS)
def test_rate_limited_upstream_is_a_429(client: Client, ingress: str, upstream: str) -> None:
    with pytest.raises(Exception) as caught:
        client.ask(f"{upstream}-busy-{ingress}", Ask())
    status, _ = client.error_of(caught.value)
    assert status == 429


def test_every_pair_ran(request: pytest.FixtureRequest) -> None:
    """The matrix is complete: 3 client protocols × 4 upstream types."""
    assert len(PAIRS) == 12 and {p.id for p in PAIRS} == {f"{i}-to-{u}" for i in INGRESSES for u in UPSTREAMS}
