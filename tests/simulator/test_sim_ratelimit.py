"""Fault mode ``ratelimit``: enforced per-key request and token buckets with OpenAI's headers."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import openai
import pytest

from tests.simulator.test_sim_faults import covers, error_of, sdk
from tests.support.procs import SimHandle, unique_key

MESSAGES: Any = [{"role": "user", "content": "Name three colours of the rainbow"}]
_DURATION_RE = re.compile(r"(?:(\d+)h)?(?:(\d+)m(?!s))?(?:([\d.]+)s)?(?:(\d+)ms)?")


def seconds(text: str) -> float:
    """A Go-style duration of the ``x-ratelimit-reset-*`` headers (``1m0s``, ``19.99s``, ``120ms``)."""
    match = _DURATION_RE.fullmatch(text)
    assert match is not None and text, f"not a duration: {text!r}"
    hours, minutes, secs, millis = (float(g) if g else 0.0 for g in match.groups())
    return hours * 3600 + minutes * 60 + secs + millis / 1000


def test_duration_parser() -> None:
    assert [seconds(t) for t in ("1m0s", "19.5s", "120ms", "1h2m5s", "0ms")] == [60, 19.5, 0.12, 3725, 0]


def test_requests_bucket_runs_out(simulator: SimHandle) -> None:
    key = unique_key(f"fault-{covers('ratelimit')}-l3")
    remaining, resets = [], []
    with sdk(simulator, key) as client:
        for _ in range(3):
            raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
            assert raw.parse().choices[0].message.content
            assert raw.headers["x-ratelimit-limit-requests"] == "3"
            remaining.append(raw.headers["x-ratelimit-remaining-requests"])
            resets.append(seconds(raw.headers["x-ratelimit-reset-requests"]))
    assert remaining == ["2", "1", "0"]
    # 3 per minute: one request comes back every 20 s, the bucket is full again 20 s per request taken
    for taken, reset in enumerate(resets, start=1):
        assert 20 * taken - 2 < reset <= 20 * taken
    response = httpx.post(
        f"{simulator.base_url}/chat/completions",
        json={"model": "gpt-4o-mini", "messages": MESSAGES},
        headers={"authorization": f"Bearer {key}"},
    )
    assert response.status_code == 429
    error = error_of(response)
    assert error["type"] == "requests" and error["code"] == "rate_limit_exceeded" and error["param"] is None
    assert re.fullmatch(
        r"Rate limit reached for gpt-4o-mini in organization org-\S+ on requests per min \(RPM\): "
        r"Limit 3, Used 3, Requested 1\. Please try again in (1[89](\.\d+)?s|20s)\. "
        r"Visit https://platform\.openai\.com/account/rate-limits to learn more\.",
        error["message"],
    ), error["message"]
    wait_ms = int(response.headers["retry-after-ms"])  # 20 s, less what came back meanwhile
    assert 18_000 < wait_ms <= 20_000 and response.headers["retry-after"] == str(-(-wait_ms // 1000))
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
    assert 59 < seconds(response.headers["x-ratelimit-reset-requests"]) <= 60
    assert response.headers["x-request-id"].startswith("req_")
    with sdk(simulator, key) as client, pytest.raises(openai.RateLimitError) as info:
        client.models.list()
    assert info.value.type == "requests" and info.value.code == "rate_limit_exceeded"
    stats = simulator.stats()
    assert stats["calls"][key] == 5 and stats["faults"][key] == 2
    assert simulator.statuses(key) == {200: 3, 429: 2}


def test_requests_bucket_refills_continuously(simulator: SimHandle) -> None:
    key = unique_key("fault-ratelimit-l120")  # two requests per second
    url = f"{simulator.base_url}/models"
    with httpx.Client(headers={"authorization": f"Bearer {key}"}, timeout=5) as http:
        statuses: list[int] = []
        while len(statuses) < 200 and (not statuses or statuses[-1] == 200):
            response = http.get(url)
            statuses.append(response.status_code)
        assert statuses[-1] == 429
        assert 120 <= statuses.count(200) <= 125  # the burst, plus what refilled meanwhile
        wait_ms = int(response.headers["retry-after-ms"])
        assert 0 < wait_ms <= 500 and response.headers["retry-after"] == "1"
        time.sleep(wait_ms / 1000)
        again = http.get(url)
        assert again.status_code == 200 and again.headers["x-ratelimit-remaining-requests"] == "0"
        empty = http.get(url)  # that request took what had come back
        assert empty.status_code == 429 and 200 < int(empty.headers["retry-after-ms"]) <= 500
    # the SDK honours retry-after-ms and gets through on its retry
    with sdk(simulator, key, max_retries=1) as client:
        started = time.perf_counter()
        assert client.models.list().data
        assert time.perf_counter() - started >= 0.3


def test_tokens_bucket(simulator: SimHandle) -> None:
    key = unique_key("fault-ratelimit-l100-t300")  # 300 tokens per minute: 5 per second
    used, prompt_tokens, rejected = 0, 0, None
    started = time.monotonic()
    with sdk(simulator, key) as client:
        for _ in range(20):
            try:
                raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
            except openai.RateLimitError as exc:
                rejected = exc
                break
            usage = raw.parse().usage
            assert usage is not None
            used += usage.total_tokens
            prompt_tokens = usage.prompt_tokens
            assert raw.headers["x-ratelimit-limit-tokens"] == "300"
            refilled = 5 * (time.monotonic() - started)
            remaining = int(raw.headers["x-ratelimit-remaining-tokens"])
            assert max(0, 300 - used) <= remaining <= max(0, 300 - used + refilled) + 1
            # until full: the tokens taken (less what came back meanwhile) at 5 per second
            reset = seconds(raw.headers["x-ratelimit-reset-tokens"])
            assert (used - refilled) / 5 - 0.5 <= reset <= used / 5 + 0.5
    assert rejected is not None, "the token bucket never ran out"
    assert 300 - prompt_tokens < used < 300 + 300  # refused once the next prompt no longer fits
    assert rejected.type == "tokens" and rejected.code == "rate_limit_exceeded"
    assert isinstance(rejected.body, dict)
    match = re.fullmatch(
        r"Rate limit reached for gpt-4o in organization org-\S+ on tokens per min \(TPM\): Limit 300, "
        r"Used (\d+), Requested (\d+)\. Please try again in ([\dhms.]+)\. Visit "
        r"https://platform\.openai\.com/account/rate-limits to learn more\.",
        rejected.body["message"],
    )
    assert match is not None, rejected.body["message"]
    assert int(match.group(2)) == prompt_tokens
    left = 300 - int(match.group(1))  # below zero when the last answers overdrew the bucket
    wait = seconds(match.group(3))
    assert wait == pytest.approx((prompt_tokens - left) / 5, abs=0.25)
    headers = rejected.response.headers
    assert int(headers["x-ratelimit-remaining-tokens"]) == max(0, left)
    assert int(headers["retry-after-ms"]) == pytest.approx(wait * 1000, abs=2)
    assert int(headers["retry-after"]) == -(-int(headers["retry-after-ms"]) // 1000)
    # a prompt bigger than the whole minute can never pass: no retry-after
    big = [{"role": "user", "content": "many words " * 200}]
    response = httpx.post(
        f"{simulator.base_url}/chat/completions",
        json={"model": "gpt-4o", "messages": big},
        headers={"authorization": f"Bearer {key}"},
    )
    assert response.status_code == 429 and "retry-after" not in response.headers
    error = error_of(response)
    assert error["type"] == "tokens" and error["code"] == "rate_limit_exceeded"
    assert re.fullmatch(
        r"Request too large for gpt-4o in organization org-\S+ on tokens per min \(TPM\): Limit 300, "
        r"Requested \d{3,}\. The input or output tokens must be reduced in order to run successfully\. "
        r"Visit https://platform\.openai\.com/account/rate-limits to learn more\.",
        error["message"],
    ), error["message"]


def test_ordinary_keys_keep_the_configured_headers(simulator: SimHandle) -> None:
    key = unique_key()
    with sdk(simulator, key) as client:
        for _ in range(3):
            raw = client.models.with_raw_response.list()
    assert raw.headers["x-ratelimit-limit-requests"] == "10000"
    assert raw.headers["x-ratelimit-remaining-requests"] == "9997"
    assert simulator.statuses(key) == {200: 3}
