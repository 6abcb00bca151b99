"""Helpers shared by the test suites: simulator processes, the OpenAPI validator, fixtures."""
