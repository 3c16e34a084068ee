"""The context file: named control planes (URL + operator token) and the current one.

`~/.config/edgefleet/contexts.json` (or `$EDGEFLEET_CP_CONTEXT_FILE`), mode 0600 because it
holds tokens. `EDGEFLEET_CP_API_URL` and `EDGEFLEET_CP_API_TOKEN` override it (scripts, CI).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controlplane.errors import CliError
from models.files import atomic_write_bytes

FILE_ENV = "EDGEFLEET_CP_CONTEXT_FILE"
URL_ENV = "EDGEFLEET_CP_API_URL"
TOKEN_ENV = "EDGEFLEET_CP_API_TOKEN"


@dataclass(frozen=True)
class Context:
    """Where one control plane is and the token to use there."""

    name: str
    url: str
    token: str


def context_file() -> Path:
    """The context file's path."""
    explicit = os.environ.get(FILE_ENV)
    if explicit:
        return Path(explicit)
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "edgefleet" / "contexts.json"


def read_contexts(path: Path | None = None) -> dict[str, Any]:
    """{"current": name, "contexts": {name: {"url": ..., "token": ...}}} (empty if none)."""
    path = path or context_file()
    if not path.is_file():
        return {"current": "", "contexts": {}}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read {path}: {exc}; fix it or log in again") from exc
    if not isinstance(data, dict) or not isinstance(data.get("contexts"), dict):
        raise CliError(f"{path} is not a context file; remove it and log in again")
    return data


def save_context(context: Context, *, make_current: bool = True) -> Path:
    """Add or replace `context` in the file (created 0600, kept 0600)."""
    path = context_file()
    data = read_contexts(path)
    data["contexts"][context.name] = {"url": context.url, "token": context.token}
    if make_current or not data.get("current"):
        data["current"] = context.name
    _write(path, data)
    return path


def forget_context(name: str) -> bool:
    """Remove a context; whether it was there."""
    path = context_file()
    data = read_contexts(path)
    if data["contexts"].pop(name, None) is None:
        return False
    if data.get("current") == name:
        data["current"] = next(iter(data["contexts"]), "")
    _write(path, data)
    return True


def use_context(name: str) -> None:
    """Make `name` the current context."""
    path = context_file()
    data = read_contexts(path)
    if name not in data["contexts"]:
        raise CliError(f"no context {name!r}; `edgefleet-cp contexts` lists them")
    data["current"] = name
    _write(path, data)


def current_context(name: str | None = None) -> Context:
    """The context to talk to: the environment's, `name`, or the file's current one."""
    url, token = os.environ.get(URL_ENV), os.environ.get(TOKEN_ENV)
    if url and token and not name:
        return Context("env", url.rstrip("/"), token)
    data = read_contexts()
    chosen = name or data.get("current") or ""
    entry = data["contexts"].get(chosen)
    if not isinstance(entry, dict):
        raise CliError(
            f"no context {chosen!r}: run `edgefleet-cp login URL --token TOKEN` first"
            if chosen
            else "not logged in: run `edgefleet-cp login URL --token TOKEN` first"
        )
    return Context(chosen, str(entry["url"]).rstrip("/"), str(entry["token"]))


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write_bytes(path, json.dumps(data, indent=2).encode(), mode=0o600)
