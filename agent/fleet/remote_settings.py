"""Agent settings set by the control plane: checked as a whole, applied as a whole, persisted.

A desired state may carry `AgentSettings`. `RemoteSettings.apply` checks every field first
(each setter may refuse a value this device cannot take), then applies them; a setter that
fails part way puts the ones already applied back, so a bad config is refused and reported,
never half applied. What is in effect is saved in the data directory (a restart keeps it)
and reported in the device's retained state. A field whose setter is None cannot change
without a restart: it is saved and reported under `restart_required`.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agent.errors import AgentError
from models.files import atomic_write_bytes
from models.protocol import AgentSettings

_LOGGER = logging.getLogger(__name__)

SETTINGS_FILE = "remote-settings.json"
SECRET_FIELDS = frozenset({"api_key_sha256"})


class SettingRefused(AgentError):
    """This device cannot take a setting; the message says which and why."""


@dataclass(frozen=True)
class Setting:
    """How one field is read, checked and changed on this device."""

    current: Callable[[], Any]
    apply: Callable[[Any], None] | None = None  # None: takes effect at the next start
    check: Callable[[Any], None] | None = None  # raises SettingRefused


class RemoteSettings:
    """Applies the control plane's agent settings to a running agent."""

    def __init__(self, data_dir: Path, settings: Mapping[str, Setting]) -> None:
        self._path = data_dir / SETTINGS_FILE
        self._settings = dict(settings)
        self._lock = threading.Lock()
        self.error = ""
        self.restart_required: list[str] = []
        self._applied: dict[str, Any] = {}
        self._local = {k: s.current() for k, s in self._settings.items()}  # before any remote

    def restore(self) -> AgentSettings | None:
        """The settings saved by the last apply (read at start, before anything runs)."""
        try:
            return AgentSettings.model_validate_json(self._path.read_bytes())
        except (OSError, ValidationError):
            return None

    def apply(self, wanted: AgentSettings | None) -> bool:
        """Check then apply every field given; on any refusal nothing changes. True if applied."""
        values = wanted.model_dump(exclude_none=True) if wanted else {}
        with self._lock:
            # Fields the fleet set before and leaves out now go back to the local value.
            target = {
                k: self._local[k]
                for k in self._applied
                if k not in values and self._settings[k].apply is not None
            }
            target.update(values)
            try:
                self._check(values)
                self._apply_all(target)
            except SettingRefused as exc:
                self.error = str(exc)
                _LOGGER.warning("refused remote settings: %s", exc)
                return False
            self.error = ""
            self._applied = values
            self.restart_required = sorted(
                k
                for k, v in values.items()
                if self._settings[k].apply is None and v != self._settings[k].current()
            )
            atomic_write_bytes(self._path, json.dumps(values).encode())
        if values:
            _LOGGER.info("remote settings in effect: %s", ", ".join(sorted(values)))
        return True

    def effective(self) -> dict[str, object]:
        """What is in effect now, per field, plus the fields waiting for a restart."""
        out: dict[str, object] = {k: s.current() for k, s in self._settings.items()}
        for key in SECRET_FIELDS & out.keys():  # a prefix says which key, never the whole digest
            out[key] = str(out[key] or "")[:12]
        out["remote"] = sorted(self._applied)
        if self.restart_required:
            out["restart_required"] = list(self.restart_required)
        return out

    def _check(self, values: Mapping[str, Any]) -> None:
        for key, value in values.items():
            setting = self._settings.get(key)
            if setting is None:
                raise SettingRefused(f"{key}: this agent cannot set it")
            if setting.check is not None:
                setting.check(value)

    def _apply_all(self, values: Mapping[str, Any]) -> None:
        done: list[tuple[Setting, Any]] = []
        try:
            for key, value in values.items():
                setting = self._settings[key]
                if setting.apply is None:
                    continue
                before = setting.current()
                setting.apply(value)
                done.append((setting, before))
        except Exception as exc:
            for setting, before in reversed(done):
                assert setting.apply is not None
                try:
                    setting.apply(before)
                except Exception:
                    _LOGGER.exception("could not put a setting back")
            raise SettingRefused(f"applying failed, nothing changed: {exc}") from exc


def log_level_setting(logger: logging.Logger | None = None) -> Setting:
    """The agent's log level (the root logger unless one is given)."""
    target = logger or logging.getLogger()

    def current() -> str:
        return logging.getLevelName(target.getEffectiveLevel()).lower()

    return Setting(current=current, apply=lambda v: target.setLevel(str(v).upper()))
