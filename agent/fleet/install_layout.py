"""Versioned agent installs side by side, and the pointer the supervisor starts.

    ROOT/versions/{version}/   an unpacked agent release (goes first on PYTHONPATH)
    ROOT/current -> versions/{version}    what the supervisor starts
    ROOT/previous -> versions/{version}   what a failed trial goes back to
    ROOT/trial.json     a switch on probation: the new version must confirm in time
    ROOT/trial-ok       written by the new version once connected and healthy
    ROOT/outcome.json   how the last switch ended, for the agent to report

No `current` means the base install (the agent in the service's venv) runs. Pointers are
swapped with a rename, so a power cut leaves either the old or the new one, never neither.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

from models.files import atomic_symlink, atomic_write_bytes

BASE = "base"  # the version name of "no current pointer": the service's own venv


@dataclass(frozen=True)
class Trial:
    """A switch waiting for the new version to prove itself."""

    version: str
    previous: str
    deadline_s: float
    started_at: float
    desired_version: int = 0
    rollout_id: str | None = None


@dataclass(frozen=True)
class Outcome:
    """How a switch ended: `active` or `rolled_back`, with why."""

    version: str
    outcome: str
    detail: str
    desired_version: int = 0
    rollout_id: str | None = None
    switch_s: float | None = None  # trial start until confirmed (or given up)
    serving_gap_s: float | None = None  # old process gone until the new one confirmed
    reported: bool = False


R = TypeVar("R", Trial, Outcome)


class AgentInstall:
    """The files of one device's agent installs under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.versions = root / "versions"
        self.current_link = root / "current"
        self.previous_link = root / "previous"
        self.trial_file = root / "trial.json"
        self.trial_ok = root / "trial-ok"
        self.outcome_file = root / "outcome.json"

    def version_dir(self, version: str) -> Path:
        """Where `version` is (or would be) unpacked."""
        return self.versions / version

    def current(self) -> str:
        """The version `current` points at, or BASE."""
        return self._target(self.current_link)

    def previous(self) -> str:
        """The version `previous` points at, or BASE."""
        return self._target(self.previous_link)

    def python_path(self) -> str | None:
        """The directory to put first on PYTHONPATH, or None for the base install."""
        version = self.current()
        return None if version == BASE else str(self.version_dir(version))

    def point(self, link: Path, version: str) -> None:
        """Make `link` point at `version` (BASE removes it), atomically."""
        if version == BASE:
            link.unlink(missing_ok=True)
            return
        atomic_symlink(link, Path("versions") / version)

    def start_trial(self, trial: Trial) -> None:
        """Record the trial, then switch `previous` and `current` to the new version."""
        self.trial_ok.unlink(missing_ok=True)
        _save(self.trial_file, trial)
        self.point(self.previous_link, trial.previous)
        self.point(self.current_link, trial.version)

    def trial(self) -> Trial | None:
        """The trial in progress, if any."""
        return _load(self.trial_file, Trial)

    def confirm(self) -> None:
        """Called by the new version once healthy: the trial passed."""
        atomic_write_bytes(self.trial_ok, str(time.time()).encode())

    def confirmed(self) -> bool:
        """True once the running trial's version confirmed."""
        return self.trial_ok.exists()

    def finish(self, outcome: Outcome, *, back_to: str | None = None) -> None:
        """End the trial: record the outcome and, when given, point `current` back."""
        if back_to is not None:
            self.point(self.current_link, back_to)
        _save(self.outcome_file, outcome)
        self.trial_file.unlink(missing_ok=True)
        self.trial_ok.unlink(missing_ok=True)

    def outcome(self) -> Outcome | None:
        """How the last switch ended, if one did."""
        return _load(self.outcome_file, Outcome)

    def mark_reported(self, outcome: Outcome) -> None:
        """Remember that the agent told the control plane about `outcome`."""
        done = Outcome(**{**asdict(outcome), "reported": True})
        _save(self.outcome_file, done)

    def _target(self, link: Path) -> str:
        try:
            return Path(os.readlink(link)).name
        except OSError:
            return BASE


def _save(path: Path, record: Trial | Outcome) -> None:
    atomic_write_bytes(path, json.dumps(asdict(record)).encode())


def _load(path: Path, kind: type[R]) -> R | None:
    """The record saved at `path`; None when absent, unreadable or of another layout."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not data:
        return None
    try:
        return kind(**data)
    except TypeError:
        return None
