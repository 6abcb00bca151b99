"""Fault selection (config map, runtime override or the ``fault-…`` key grammar) and the connection abort.

Key grammar, needing no configuration::

    fault-<mode>[-<param>]...[_<label>]

``<mode>`` is one of :data:`~vectorengine.simulator.config.FAULT_MODES`. Parameters:
``p<0-100>`` percent of the key's calls that fail (default 100), ``w<millis>`` makes ``p``
the failing share of each window of that length instead, ``ra<seconds>`` the
``retry-after`` of 429/503 (default 1), ``ms<millis>`` the wait of ``slow-first-byte``
(default 2000), ``n<count>`` good SSE events before ``drop-mid-stream``,
``malformed-json`` or ``mid-stream-error`` strike (default 3), ``l<requests>`` and
``t<tokens>`` the per-minute limits of ``ratelimit`` (default 60 requests; tokens default
to the configured ``tpm_limit``). Anything after ``_`` is a free label, handy to give each
test its own call counter: ``fault-429-p50-ra2_t1``.

A *fault spec* (the body of ``PUT /_sim/keys/{key}``) is the same without the ``fault-``
prefix and the label: ``500``, ``429-ra2``, ``ratelimit-l60-t10000``.
"""

from __future__ import annotations

import os
import re
import socket
import stat
import struct

from vectorengine.simulator.config import FAULT_MODES, FaultSpec
from vectorengine.simulator.wire import number_text

FAULT_KEY_PREFIX = "fault-"

_PARAM_RE = re.compile(r"(p|w|ra|ms|n|l|t)(\d+(?:\.\d+)?)")
_MODES_LONGEST_FIRST = sorted(FAULT_MODES, key=len, reverse=True)
PARAMS_HELP = (
    "p<percent>, w<window millis>, ra<retry-after seconds>, ms<millis>, n<events>, "
    "l<requests per minute>, t<tokens per minute>"
)
SPEC_HELP = (
    f"<mode>[-<param>]... with <mode> one of {', '.join(FAULT_MODES)} and <param> one of "
    f"{PARAMS_HELP}, e.g. '500', '429-ra2', '503-p30-w1000', 'ratelimit-l60-t10000'"
)


class FaultKeyError(ValueError):
    """A key starting with ``fault-`` (or a fault spec) that does not follow the grammar."""


def parse_fault_key(key: str) -> FaultSpec | None:
    """The fault a key names, ``None`` for an ordinary key; :class:`FaultKeyError` if malformed."""
    if not key.startswith(FAULT_KEY_PREFIX):
        return None
    return _parse(key[len(FAULT_KEY_PREFIX) :].split("_", 1)[0], f"key {key!r}")


def parse_fault_spec(spec: str) -> FaultSpec:
    """A fault spec (``429-ra2``: the key grammar without ``fault-`` and label); :class:`FaultKeyError`."""
    if "_" in spec:
        raise FaultKeyError(f"a fault spec has no label, but {spec!r} contains '_'")
    return _parse(spec, f"spec {spec!r}")


def _parse(body: str, where: str) -> FaultSpec:
    for mode in _MODES_LONGEST_FIRST:
        if body == mode or body.startswith(mode + "-"):
            params = body[len(mode) + 1 :]
            break
    else:
        raise FaultKeyError(f"unknown fault mode in {where}; modes: {', '.join(FAULT_MODES)}")
    fields: dict[str, float] = {}
    for token in params.split("-") if body != mode else ():
        match = _PARAM_RE.fullmatch(token)
        if match is None:
            raise FaultKeyError(
                f"bad fault parameter {token!r} in {where}; use {PARAMS_HELP}, and put free text after '_'"
            )
        fields[match.group(1)] = float(match.group(2))
    try:
        return FaultSpec(
            mode=mode,  # type: ignore[arg-type]  # checked against FAULT_MODES above
            percent=int(fields.get("p", 100)),
            retry_after_s=fields.get("ra", 1.0),
            delay_ms=int(fields.get("ms", 2000)),
            after_chunks=int(fields.get("n", 3)),
            window_ms=int(fields["w"]) if "w" in fields else None,
            rpm_limit=int(fields.get("l", 60)),
            tpm_limit=int(fields["t"]) if "t" in fields else None,
        )
    except ValueError as exc:
        raise FaultKeyError(f"bad fault {where}: {exc}") from None


def format_fault(fault: FaultSpec) -> str:
    """The fault spec text of ``fault`` (parameters at their default left out, ``l`` always shown
    for ``ratelimit``); ``parse_fault_spec(format_fault(f)) == f``."""
    default = FaultSpec(mode=fault.mode)
    parts: list[str] = [fault.mode]
    if fault.percent != default.percent:
        parts.append(f"p{fault.percent}")
    if fault.window_ms is not None:
        parts.append(f"w{fault.window_ms}")
    if fault.retry_after_s != default.retry_after_s:
        parts.append(f"ra{number_text(fault.retry_after_s)}")
    if fault.delay_ms != default.delay_ms:
        parts.append(f"ms{fault.delay_ms}")
    if fault.after_chunks != default.after_chunks:
        parts.append(f"n{fault.after_chunks}")
    if fault.mode == "ratelimit" or fault.rpm_limit != default.rpm_limit:
        parts.append(f"l{fault.rpm_limit}")
    if fault.tpm_limit is not None:
        parts.append(f"t{fault.tpm_limit}")
    return "-".join(parts)


def strikes(percent: int, call_number: int) -> bool:
    """Whether the ``call_number``-th call (1-based) of a key fails at ``percent``."""
    if percent >= 100:
        return True
    if percent <= 0 or call_number < 1:
        return False
    return -(-call_number * percent // 100) > -(-(call_number - 1) * percent // 100)


def strikes_in_window(percent: int, window_ms: int, elapsed_ms: float) -> bool:
    """Whether a call ``elapsed_ms`` after the clock's origin falls in the failing head of its window:
    the first ``percent`` % of every ``window_ms``."""
    return elapsed_ms % window_ms < window_ms * percent / 100


def abort_connection(client: str) -> bool:
    """Cut the TCP connection of the peer ``client`` (``"ip:port"``) served by this process.

    Granian always ends a stream cleanly (terminating chunk) when the application returns
    or raises, so a mid-stream drop needs the socket itself: find our descriptor whose peer
    is ``client``, set a zero linger and shut it down both ways. The peer then sees the body
    end without its terminator (``incomplete chunked read``) and the server's writes fail,
    which makes Granian drop the connection. Linux only (reads ``/proc/self/fd``); returns
    ``False`` when the socket was not found.
    """
    host, sep, port_text = client.rpartition(":")
    if not sep or not port_text.isdigit():
        return False
    host, port = host.strip("[]"), int(port_text)
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return False
    return any(_shutdown_if_peer(int(name), host, port) for name in names)


def _shutdown_if_peer(fd: int, host: str, port: int) -> bool:
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            return False
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return False
    with sock:
        try:
            peer = sock.getpeername()
        except OSError:
            return False
        if not (isinstance(peer, tuple) and peer[1] == port and _same_host(peer[0], host)):
            return False
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            return False
        return True


def _same_host(peer_host: str, host: str) -> bool:
    return peer_host == host or peer_host.removeprefix("::ffff:") == host.removeprefix("::ffff:")
