"""Per-device desired state: a version that only rises, stored before it is published."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import Table, bindparam, insert, select, update
from sqlmodel import Session

from controlplane.db_models import utcnow
from controlplane.rollouts.models import DeviceDesired
from models.protocol import AgentRelease, AgentSettings, DesiredModel, DesiredState, device_topic

_LOGGER = logging.getLogger(__name__)

# Publishes one retained QoS 1 message; returns None when it cannot be sent now, else a
# `confirm()` that says, without waiting, whether the broker acknowledged it: True (yes),
# False (it never will) or None (not yet).
Confirm = Callable[[], "bool | None"]
PublishDesired = Callable[[str, DesiredState], "Confirm | None"]

PUBLISH_LIMIT = 5000  # desired states sent per tick
ACK_TIMEOUT_S = 30.0  # an unacknowledged publish older than this is sent again
CHUNK = 500  # ids per IN (...) list

_TABLE: Table = DeviceDesired.__table__  # type: ignore[attr-defined]
# One executemany UPDATE per column a desired state carries: the column, a new version.
_BUMP = {
    name: update(_TABLE)
    .where(_TABLE.c.device_id == bindparam("b_id"))
    .values(
        {
            "version": bindparam("b_version"),
            name: bindparam("b_value", type_=_TABLE.c[name].type),
            "updated_at": bindparam("b_at", type_=_TABLE.c.updated_at.type),
        }
    )
    for name in ("models", "agent", "settings")
}
_MARK_PUBLISHED = (
    update(_TABLE)
    .where(_TABLE.c.device_id == bindparam("b_id"))
    .where(_TABLE.c.published_version < bindparam("b_version"))
    .values(published_version=bindparam("b_version"))
)

T = TypeVar("T")


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    """Slices of at most `size` items (bounded IN lists and executemany batches)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def current(session: Session, device_id: str) -> DeviceDesired | None:
    """The device's stored desired state, if any."""
    return session.get(DeviceDesired, device_id, populate_existing=True)


def models_by_device(
    session: Session, device_ids: Sequence[str]
) -> dict[str, list[dict[str, Any]]]:
    """Stored desired models of each device that has a desired state (one query per chunk)."""
    return {d: list(m or []) for d, m in _stored(session, "models", device_ids).items()}


def agents_by_device(
    session: Session, device_ids: Sequence[str]
) -> dict[str, dict[str, Any] | None]:
    """Stored desired agent release of each device that has a desired state."""
    return {d: a or None for d, a in _stored(session, "agent", device_ids).items()}


def _stored(session: Session, name: str, device_ids: Sequence[str]) -> dict[str, Any]:
    """Column `name` of each of these devices that has a desired state (one query per chunk)."""
    out: dict[str, Any] = {}
    for part in chunks(device_ids):
        query = select(_TABLE.c.device_id, _TABLE.c[name]).where(_TABLE.c.device_id.in_(part))
        out.update((device_id, value) for device_id, value in session.execute(query))
    return out


def _versions(session: Session, device_ids: Sequence[str]) -> dict[str, int]:
    """The stored desired version of each of these devices that has one."""
    query = select(_TABLE.c.device_id, _TABLE.c.version).where(_TABLE.c.device_id.in_(device_ids))
    return {row.device_id: row.version for row in session.execute(query)}


def set_many(session: Session, models: Mapping[str, Sequence[DesiredModel]]) -> dict[str, int]:
    """Store a new desired state per device with its next version (caller commits).

    One SELECT and one executemany UPDATE/INSERT per chunk; returns device id -> version.
    """
    dumped = {d: [m.model_dump(mode="json") for m in ms] for d, ms in models.items()}
    return _set_field(session, "models", dumped)


def set_agent_many(session: Session, agents: Mapping[str, dict[str, Any] | None]) -> dict[str, int]:
    """Store the desired agent release per device (None: keep what runs); caller commits."""
    return _set_field(session, "agent", agents)


def set_settings(session: Session, device_id: str, settings: AgentSettings | None) -> int:
    """Store the desired agent settings of one device; its new desired version."""
    value = settings.model_dump(mode="json", exclude_none=True) if settings else None
    return _set_field(session, "settings", {device_id: value})[device_id]


def _set_field(session: Session, name: str, values: Mapping[str, Any]) -> dict[str, int]:
    """Set column `name` per device and bump its version; a device without a row gets one."""
    now = utcnow()
    versions: dict[str, int] = {}
    for part in chunks(list(values)):
        stored = _versions(session, part)
        bumps, news = [], []
        for device_id in part:
            if device_id in stored:
                versions[device_id] = stored[device_id] + 1
                bumps.append(
                    {
                        "b_id": device_id,
                        "b_version": versions[device_id],
                        "b_value": values[device_id],
                        "b_at": now,
                    }
                )
            else:
                versions[device_id] = 1
                news.append(
                    {
                        "device_id": device_id,
                        "version": 1,
                        "models": [],
                        name: values[device_id],
                        "published_version": 0,
                        "updated_at": now,
                    }
                )
        if bumps:
            session.execute(_BUMP[name], bumps)
        if news:
            session.execute(insert(_TABLE), news)
    return versions


def message_of(version: int, models: Any, agent: Any, settings: Any) -> DesiredState:
    """The desired message from a stored row's columns."""
    return DesiredState(
        version=version,
        models=[DesiredModel.model_validate(m) for m in models or []],
        agent=AgentRelease.model_validate(agent) if agent else None,
        settings=AgentSettings.model_validate(settings) if settings else None,
    )


class DesiredPublisher:
    """Sends every desired state the broker lacks, never waiting for an acknowledgement.

    Each `step` first records the PUBACKs that arrived since the last one (one executemany),
    then publishes what is pending and not already on its way. A publish that is refused or
    stays unacknowledged past `ack_timeout_s` is sent again on a later step.
    """

    def __init__(self, publish: PublishDesired, *, ack_timeout_s: float = ACK_TIMEOUT_S) -> None:
        self._publish = publish
        self._ack_timeout_s = ack_timeout_s
        self._in_flight: dict[str, tuple[int, Confirm, float]] = {}

    def step(self, session: Session, limit: int = PUBLISH_LIMIT) -> int:
        """Publish pending desired states; returns how many acknowledgements were recorded."""
        acked = self._collect(session)
        rows = session.execute(
            select(
                _TABLE.c.device_id,
                _TABLE.c.version,
                _TABLE.c.models,
                _TABLE.c.agent,
                _TABLE.c.settings,
            )
            .where(_TABLE.c.published_version < _TABLE.c.version)
            .limit(limit + len(self._in_flight))
        ).all()
        sent = 0
        now = time.monotonic()
        for device_id, version, models, agent, settings in rows:
            flying = self._in_flight.get(device_id)
            if (flying is not None and flying[0] == version) or sent >= limit:
                continue
            msg = message_of(version, models, agent, settings)
            confirm = self._publish(device_topic(device_id, "desired"), msg)
            if confirm is None:
                break  # the broker is away: the rest waits for a later step
            self._in_flight[device_id] = (version, confirm, now)
            sent += 1
        if sent:
            _LOGGER.debug("published %d desired states", sent)
        return acked + self._collect(session)

    def _collect(self, session: Session) -> int:
        done: list[dict[str, Any]] = []
        now = time.monotonic()
        for device_id, (version, confirm, sent_at) in list(self._in_flight.items()):
            outcome = confirm()
            if outcome:
                done.append({"b_id": device_id, "b_version": version})
            elif outcome is None and now - sent_at < self._ack_timeout_s:
                continue
            del self._in_flight[device_id]
        if done:
            session.execute(_MARK_PUBLISHED, done)
            session.commit()
        return len(done)
