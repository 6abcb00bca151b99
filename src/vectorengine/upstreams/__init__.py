"""Upstreams: the registry of upstream types (data, ``registry.py``), one dialect per wire
format, which dialect and wire a channel uses (``wires.py``), the transport.

Nothing is imported here, so reading the registry (as the configuration does) loads no dialect.
"""
