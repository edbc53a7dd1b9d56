"""The example configuration that docs/CONFIGURATION.md points operators to parses as it stands."""

from __future__ import annotations

from conftest import REPO

from config.settings import load_settings


def test_the_example_config_parses_with_the_documented_values():
    settings = load_settings(REPO / "config" / "vodgate.example.toml")
    assert settings.index_cache_mb == 256 and settings.index_cache_entries == 1024
    assert (settings.header_timeout, settings.max_header_bytes) == (10, 16384)
    assert (settings.max_connections, settings.keep_alive_timeout) == (1000, 5)
    assert settings.cache_enabled and settings.hot_lane
