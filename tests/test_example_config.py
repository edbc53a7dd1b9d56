"""The example configuration that docs/CONFIGURATION.md points operators to parses as it stands."""

from __future__ import annotations

from conftest import REPO

from config.settings import load_settings


def test_the_example_config_parses_with_the_documented_values():
    settings = load_settings(REPO / "config" / "vodgate.example.toml")
    assert settings.index_cache_mb == 256 and settings.index_cache_entries == 1024
    assert (settings.header_timeout, settings.max_header_bytes, settings.body_timeout) == (10, 16384, 10)
    assert (settings.max_connections, settings.keep_alive_timeout) == (1000, 5)
    assert settings.cache_enabled and settings.hot_lane


def test_the_deployment_guides_origin_and_edge_files_parse():
    """docs/DEPLOYMENT.md's origin.toml and edge.toml, as an operator would copy them."""
    import re

    import tomllib

    from config.settings import parse_settings
    from config.edge import parse_edge_section

    text = (REPO / "docs" / "DEPLOYMENT.md").read_text()
    blocks = {name: body for name, body in re.findall(r"`(origin|edge)\.toml`[^`]*?```toml\n(.*?)```", text, re.S)}
    assert set(blocks) == {"origin", "edge"}
    origin = parse_settings(tomllib.loads(blocks["origin"]), "origin.toml")
    assert origin.shield_secrets and origin.edge_secrets
    edge = parse_settings(tomllib.loads(blocks["edge"]), "edge.toml")
    role, config = parse_edge_section(edge.edge_table, "edge.toml")
    assert role == "edge" and edge.edge_secrets == origin.edge_secrets
    assert dict(config.upstream_headers)["X-Vodgate-Shield"] in origin.shield_secrets


def test_a_config_file_that_is_not_utf8_is_a_config_error(tmp_path):
    import pytest

    from config.settings import ConfigError

    path = tmp_path / "bad.toml"
    path.write_bytes(b'[server]\nhost = "\xed\xa0\x80"\n')
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_settings(path)
