from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from vectorengine.settings import ConfigError, load_settings, parse_settings

ISSUE_SHAPE = textwrap.dedent(
    """
    listen: 127.0.0.1:8080
    database: sqlite:///./data/vectorengine.db     # or postgresql+asyncpg://...
    admin_key: ${VE_ADMIN_KEY}                     # generated and printed once on first start if absent
    channels:
      - name: main
        type: openai                               # any OpenAI-compatible upstream
        base_url: http://127.0.0.1:18000/v1
        keys: [key-a, key-b]
        models: [gpt-4o-mini]
        model_map: {gpt-4o-mini: gpt-4o-mini-2024-07-18}   # optional
        priority: 0
        weight: 1
    tokens:
      - name: bench
        key: sk-bench-0123456789abcdef             # optional fixed key for automation; else generated
        models: [gpt-4o-mini]                      # optional allow-list
    """
)


def test_the_documented_shape_parses_exactly(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(ISSUE_SHAPE)
    s = load_settings(path, env={"VE_ADMIN_KEY": "adm-123"})
    assert (s.host, s.port) == ("127.0.0.1", 8080)
    assert s.database == "sqlite:///./data/vectorengine.db"
    assert s.admin_key == "adm-123"
    (ch,) = s.channels
    assert ch.name == "main" and ch.type == "openai" and ch.keys == ["key-a", "key-b"]
    assert ch.model_map == {"gpt-4o-mini": "gpt-4o-mini-2024-07-18"}
    (tok,) = s.tokens
    assert tok.key == "sk-bench-0123456789abcdef" and tok.models == ["gpt-4o-mini"]


def test_unset_env_for_a_whole_value_means_absent() -> None:
    s = parse_settings(yaml.safe_load(ISSUE_SHAPE), env={})
    assert s.admin_key is None


def test_env_default_and_embedded_reference() -> None:
    raw = {"database": "postgresql+asyncpg://u@${PGHOST:-localhost}:5432/${DB}"}
    assert parse_settings(raw, env={"DB": "x"}).database == "postgresql+asyncpg://u@localhost:5432/x"
    with pytest.raises(ConfigError, match=r"\$\.database: environment variable DB is not set"):
        parse_settings(raw, env={})


def test_settings_are_frozen() -> None:
    s = parse_settings({}, env={})
    with pytest.raises(AttributeError):
        s.listen = "0.0.0.0:1"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"listne": "x"}, r"^\$\.listne: unknown key$"),
        (
            {
                "channels": [
                    {"name": "a", "base_url": "http://x", "keys": ["k"], "models": ["m"], "wieght": 2}
                ]
            },
            r"^\$\.channels\[0\]\.wieght: unknown key$",
        ),
        ({"usage": {"batch": 1}}, r"^\$\.usage\.batch: unknown key$"),
        ({"tokens": [{"name": "t", "key": "short"}]}, r"\$\.tokens\[0\]\.key"),
        (
            {"channels": [{"name": "a", "base_url": "http://x", "keys": [], "models": ["m"]}]},
            r"\$\.channels\[0\]\.keys",
        ),
        (
            {
                "channels": [
                    {"name": "a", "type": "nope", "base_url": "http://x", "keys": ["k"], "models": ["m"]}
                ]
            },
            r"\$\.channels\[0\]\.type: unknown upstream type 'nope'",
        ),
        (
            {"channels": [{"name": "a", "base_url": "ftp://x", "keys": ["k"], "models": ["m"]}]},
            r"\$\.channels\[0\]\.base_url",
        ),
        (
            {
                "channels": [
                    {
                        "name": "a",
                        "base_url": "http://x",
                        "keys": ["k"],
                        "models": ["m"],
                        "model_map": {"other": "x"},
                    }
                ]
            },
            r"\$\.channels\[0\]\.model_map\.other",
        ),
        ({"listen": "nohost"}, r"\$\.listen"),
        ({"workers": "2"}, r"\$\.workers"),
        ([1, 2], r"^\$: the configuration must be a mapping$"),
        ({"database": "sqlite:///:memory:"}, r"^\$\.database: SQLite in memory is not supported"),
        ({"database": "sqlite://"}, r"^\$\.database: SQLite in memory is not supported"),
    ],
)
def test_invalid_config_names_the_path(raw: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_settings(raw, env={})


def test_duplicate_names_rejected() -> None:
    ch = {"name": "a", "base_url": "http://x", "keys": ["k"], "models": ["m"]}
    with pytest.raises(ConfigError, match=r"\$\.channels\[1\]\.name: duplicate"):
        parse_settings({"channels": [ch, ch]}, env={})
    with pytest.raises(ConfigError, match=r"\$\.tokens\[1\]\.name: duplicate"):
        parse_settings({"tokens": [{"name": "t"}, {"name": "t"}]}, env={})


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("channels: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(bad)
