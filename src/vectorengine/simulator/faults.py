"""Fault selection (config map or the ``fault-…`` key grammar) and the connection abort.

Key grammar, needing no configuration::

    fault-<mode>[-<param>]...[_<label>]

``<mode>`` is one of :data:`~vectorengine.simulator.config.FAULT_MODES`. Parameters:
``p<0-100>`` percent of the key's calls that fail (default 100), ``ra<seconds>`` the
``retry-after`` of 429/503 (default 1), ``ms<millis>`` the wait of ``slow-first-byte``
(default 2000), ``n<count>`` good SSE events before ``drop-mid-stream``,
``malformed-json`` or ``mid-stream-error`` strike (default 3). Anything after ``_`` is a
free label, handy to give each test its own call counter: ``fault-429-p50-ra2_t1``.
"""

from __future__ import annotations

import os
import re
import socket
import stat
import struct

from vectorengine.simulator.config import FAULT_MODES, FaultSpec

FAULT_KEY_PREFIX = "fault-"

_PARAM_RE = re.compile(r"(p|ra|ms|n)(\d+(?:\.\d+)?)")
_MODES_LONGEST_FIRST = sorted(FAULT_MODES, key=len, reverse=True)


class FaultKeyError(ValueError):
    """A key starting with ``fault-`` that does not follow the grammar."""


def parse_fault_key(key: str) -> FaultSpec | None:
    """The fault a key names, ``None`` for an ordinary key; :class:`FaultKeyError` if malformed."""
    if not key.startswith(FAULT_KEY_PREFIX):
        return None
    body = key[len(FAULT_KEY_PREFIX) :].split("_", 1)[0]
    for mode in _MODES_LONGEST_FIRST:
        if body == mode or body.startswith(mode + "-"):
            params = body[len(mode) + 1 :]
            break
    else:
        raise FaultKeyError(f"unknown fault mode in key {key!r}; modes: {', '.join(FAULT_MODES)}")
    fields: dict[str, float] = {}
    for token in params.split("-") if params else ():
        match = _PARAM_RE.fullmatch(token)
        if match is None:
            raise FaultKeyError(
                f"bad fault parameter {token!r} in key {key!r}; use p<percent>, ra<seconds>, "
                "ms<millis>, n<events>, and put free text after '_'"
            )
        fields[match.group(1)] = float(match.group(2))
    try:
        return FaultSpec(
            mode=mode,  # type: ignore[arg-type]  # checked against FAULT_MODES above
            percent=int(fields.get("p", 100)),
            retry_after_s=fields.get("ra", 1.0),
            delay_ms=int(fields.get("ms", 2000)),
            after_chunks=int(fields.get("n", 3)),
        )
    except ValueError as exc:
        raise FaultKeyError(f"bad fault key {key!r}: {exc}") from None


def strikes(percent: int, call_number: int) -> bool:
    """Whether the ``call_number``-th call (1-based) of a key fails at ``percent``."""
    if percent >= 100:
        return True
    if percent <= 0 or call_number < 1:
        return False
    return -(-call_number * percent // 100) > -(-(call_number - 1) * percent // 100)


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
