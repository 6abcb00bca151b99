"""VectorEngine: a self-hosted AI API gateway."""

__version__ = "0.1.0"

# How `vectorengine serve` hands the validated settings to each Granian worker (app.from_env).
SETTINGS_ENV = "VE_SETTINGS_JSON"
