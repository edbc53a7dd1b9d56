"""The package layers of docs/ARCHITECTURE.md, checked on the source: a lower layer never imports a
higher one (so no import cycle can form between them).

    packager/   pure: no web framework, no asyncio, nothing of the project but itself
    config/     parses every TOML section: may use auth/ and origin/ types, never edge/ or analytics/
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PROJECT = {"analytics", "auth", "cli", "config", "edge", "loadtests", "origin", "packager"}


def imported_packages(path: Path) -> set[str]:
    """Top-level names of every absolute import in a module, wherever in it they stand."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


FORBIDDEN = {
    "packager": (PROJECT - {"packager"}) | {"starlette", "uvicorn", "httpx", "asyncio", "aiofiles"},
    "config": {"edge", "analytics", "cli", "loadtests"},
}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_lower_layer_never_imports_a_higher_one(package: str) -> None:
    offenders = {
        str(path.relative_to(REPO)): sorted(imported_packages(path) & FORBIDDEN[package])
        for path in sorted((REPO / package).rglob("*.py"))
    }
    assert {k: v for k, v in offenders.items() if v} == {}
