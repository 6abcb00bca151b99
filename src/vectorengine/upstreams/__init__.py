"""Upstream providers: one module per wire format, hosts described as data, one registry."""
