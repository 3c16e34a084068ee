"""Agent self-update: the desired state names an agent release; install it beside, switch, restart.

On a new `desired.agent` version: download release.json, release.sig and the wheel(s),
verify the signature against the fleet's keys and every file's sha256, unpack into
`versions/{version}` beside the running one, open a trial (agent/fleet/install_layout.py) and ask
the supervisor for a restart. The new version confirms the trial once it is connected and
serving (`on_start`); if it does not within the deadline, or crashes, the supervisor puts
the previous version back and that version reports `rolled_back` when it starts. A version
that was rolled back on this device is not tried again until the control plane names
another one.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.errors import AgentError
from agent.fleet.install_layout import AgentInstall, Outcome, Trial
from agent.fleet.rollout_events import EventSink
from agent.fleet.supervisor import PREVIOUS_EXIT_ENV
from models.agent_release import (
    RELEASE_FILE,
    RELEASE_NAME,
    RELEASE_SIGNATURE_FILE,
    unpack_wheels,
    verify_release,
    verify_release_dir,
)
from models.errors import ModelsError
from models.files import atomic_write_bytes
from models.protocol import AgentRelease, DesiredState, EventKind, RolloutEvent

_LOGGER = logging.getLogger(__name__)

TRIAL_DEADLINE_S = 120.0  # the new version must connect and serve within this
DOWNLOAD_TIMEOUT_S = 60.0
HEALTH_POLL_S = 0.2

Fetch = Callable[[str, Mapping[str, str]], bytes]


class UpdateFailed(AgentError):
    """An agent release could not be installed; the running version stays."""


def fetch_url(url: str, headers: Mapping[str, str]) -> bytes:
    """GET `url` (http, https or file) as bytes; UpdateFailed when it cannot be read."""
    parts = urlsplit(url)
    try:
        if parts.scheme == "file":
            return Path(parts.path).read_bytes()
        response = httpx.get(
            url, headers=dict(headers), timeout=DOWNLOAD_TIMEOUT_S, follow_redirects=True
        )
        response.raise_for_status()
        return response.content
    except (OSError, httpx.HTTPError) as exc:
        raise UpdateFailed(f"cannot download {url}: {exc}") from exc


class AgentUpdater:
    """Installs agent releases the control plane asks for and reports how switches ended."""

    def __init__(
        self,
        install: AgentInstall,
        *,
        running_version: str,
        trusted_keys: Sequence[Ed25519PublicKey],
        emit: EventSink,
        request_restart: Callable[[], None],
        headers: Mapping[str, str] | None = None,
        fetch: Fetch = fetch_url,
        deadline_s: float | None = None,
    ) -> None:
        self.install = install
        self.running_version = running_version
        self.trusted_keys = list(trusted_keys)
        self.emit = emit
        self.request_restart = request_restart
        self.headers = dict(headers or {})
        self.fetch = fetch
        self.deadline_s = TRIAL_DEADLINE_S if deadline_s is None else deadline_s
        self._watch: threading.Thread | None = None

    # -- the old version: install and switch --------------------------------------------------
    def apply(self, desired: DesiredState) -> None:
        """Carry out `desired.agent` (blocking); returns at once when there is nothing to do."""
        target = desired.agent
        if target is None or target.version == self.running_version:
            return
        last = self.install.outcome()
        if last is not None and last.version == target.version and last.outcome == "rolled_back":
            _LOGGER.warning(
                "agent %s was rolled back here (%s); not trying it again",
                target.version,
                last.detail,
            )
            return

        def report(kind: EventKind, detail: str = "") -> None:
            self.emit(
                RolloutEvent(
                    desired_version=desired.version,
                    rollout_id=target.rollout_id,
                    model=f"{RELEASE_NAME}:{target.version}",
                    kind=kind,
                    detail=detail,
                )
            )

        report("accepted", f"running {self.running_version}")
        try:
            self._install(target, report)
        except (UpdateFailed, ModelsError, OSError) as exc:
            _LOGGER.warning("agent %s not installed: %s", target.version, exc)
            report("failed", f"{exc}; still running {self.running_version}")
            return
        back = f"healthy within {self.deadline_s:g} s or {self.running_version} comes back"
        report("health_check", f"restarting into {target.version}; {back}")
        self.install.start_trial(
            Trial(
                version=target.version,
                previous=self.install.current(),
                deadline_s=self.deadline_s,
                started_at=time.time(),
                desired_version=desired.version,
                rollout_id=target.rollout_id,
            )
        )
        _LOGGER.warning("switching to agent %s: restarting", target.version)
        self.request_restart()

    def _install(self, target: AgentRelease, report: Callable[..., None]) -> None:
        base = target.release_url.rsplit("/", 1)[0]
        staging = self.install.root / "staging" / target.version
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        report("downloading", target.release_url)
        release = self.fetch(target.release_url, self.headers)
        signature = self.fetch(f"{base}/{RELEASE_SIGNATURE_FILE}", self.headers)
        manifest = verify_release(release, signature, self.trusted_keys)
        if manifest.version != target.version:
            raise UpdateFailed(f"release.json says {manifest.version}, wanted {target.version}")
        atomic_write_bytes(staging / RELEASE_FILE, release)
        atomic_write_bytes(staging / RELEASE_SIGNATURE_FILE, signature)
        for entry in manifest.files:
            atomic_write_bytes(
                staging / entry.path, self.fetch(f"{base}/files/{entry.path}", self.headers)
            )
        report("verifying")
        verify_release_dir(staging, self.trusted_keys)
        report("loading", f"installing into versions/{target.version}")
        final = self.install.version_dir(target.version)
        partial = final.with_name(final.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        unpack_wheels(staging, manifest, partial)
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
        shutil.rmtree(staging, ignore_errors=True)

    # -- the new version (or the old one, back): confirm or report ---------------------------
    def on_start(self, healthy: Callable[[float], bool]) -> None:
        """Report a rollback that brought this version back; confirm this version's trial."""
        last = self.install.outcome()
        if last is not None and not last.reported and last.outcome == "rolled_back":
            back = f"{last.detail}; {self.running_version} is back"
            self.emit(_trial_event(last, "rolled_back", back))
            self.install.mark_reported(last)
        trial = self.install.trial()
        if trial is None or trial.version != self.running_version:
            return
        self._watch = threading.Thread(
            target=self._confirm, args=(trial, healthy), name="agent-trial", daemon=True
        )
        self._watch.start()

    def _confirm(self, trial: Trial, healthy: Callable[[float], bool]) -> None:
        left = trial.started_at + trial.deadline_s - time.time()
        if left <= 0 or not healthy(left):
            _LOGGER.error(
                "agent %s is not healthy; the supervisor will put %s back",
                trial.version,
                trial.previous,
            )
            return
        self.install.confirm()
        now = time.time()
        took = now - trial.started_at
        health = {"switch_s": round(took, 3)}
        previous_exit = os.environ.get(PREVIOUS_EXIT_ENV)
        if previous_exit:  # from the old process's exit until this one serves and is connected
            health["serving_gap_s"] = round(now - float(previous_exit), 3)
        detail = f"agent {trial.version} running and healthy {took:.1f} s after the switch "
        detail += f"(from {trial.previous})"
        if "serving_gap_s" in health:
            detail += f"; serving gap {health['serving_gap_s']:.1f} s"
        self.emit(_trial_event(trial, "active", detail, health=health))
        self._prune(keep={trial.version, trial.previous})
        _LOGGER.info("agent %s confirmed after %.1f s", trial.version, took)

    def _prune(self, keep: set[str]) -> None:
        """Remove installs other than the current and previous ones."""
        if not self.install.versions.is_dir():
            return
        for path in self.install.versions.iterdir():
            if path.name not in keep:
                shutil.rmtree(path, ignore_errors=True)


def _trial_event(
    of: Trial | Outcome, kind: EventKind, detail: str, *, health: dict[str, float] | None = None
) -> RolloutEvent:
    """The event reporting how a switch to the agent version `of.version` went."""
    return RolloutEvent(
        desired_version=of.desired_version,
        rollout_id=of.rollout_id,
        model=f"{RELEASE_NAME}:{of.version}",
        kind=kind,
        detail=detail,
        health=health,
    )
