"""The ``[admin]`` table: where a node without Redis keeps the admin API's profile changes.

    [admin]
    state_file = "admin-state.json"   # relative to the config file; "" or absent: memory only

With ``[redis] url`` the changes live in Redis (every node shares them) and ``state_file`` is not used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError, check_table, wrong_type

ADMIN_KEYS = {"state_file"}


@dataclass(frozen=True)
class AdminConfig:
    state_file: Path | None = None  # edge/admin_store.py's FileLog; None: Redis or memory
    # True for a file the server made itself (the workers of a node without one, in a folder removed at exit):
    # shared by the workers, yet lost at a restart like memory, and warned about as memory is
    temporary: bool = False


def parse_admin(table: Any, source: str, base_dir: Path) -> AdminConfig:
    """``[admin]`` -> AdminConfig; ConfigError naming the key for an unknown key or a wrong type."""
    admin = check_table(table, "admin", ADMIN_KEYS, source)
    state_file = admin.get("state_file", "")
    if not isinstance(state_file, str):
        raise wrong_type("admin.state_file", state_file, str, source)
    if state_file.endswith("/"):
        raise ConfigError(f"{source}: admin.state_file has value {state_file!r}; expected a file name such as "
                          '"admin-state.json", not a folder')
    if not state_file:
        return AdminConfig()
    path = Path(state_file)
    return AdminConfig(path if path.is_absolute() else base_dir / path)
