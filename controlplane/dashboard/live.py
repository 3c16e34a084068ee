"""Live dashboard pages over server-sent events, coalesced: one poller per stream, at most one
event per interval, however many browsers watch and however many devices change.

A stream (`fleet`, `devices`, `rollout:<id>`) runs only while someone subscribes. Its poller
reads the database off the event loop, and offers the result to every subscriber; a
subscriber that has not taken the last offer gets the newer one in its place (snapshots) or
merged into it (the `devices` diff), so a slow browser never builds a backlog.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from controlplane.dashboard.routes import current_viewer
from controlplane.db_models import Device
from controlplane.errors import ApiError
from controlplane.rollouts import service
from controlplane.telemetry_summary import STALE_AFTER, erring_devices
from models.protocol import utcnow

_LOGGER = logging.getLogger(__name__)
INTERVAL_S = {"fleet": 2.0, "devices": 2.0, "rollout": 1.0}  # at most one event per this
KEEPALIVE_S = 15.0  # a comment line this often keeps proxies from closing an idle stream
STREAM_MAX_S = 60.0  # then the browser reconnects (EventSource does): no stream outlives this
RETRY_MS = 1000
MAX_DEVICE_CHANGES = 500  # more in one event: the page is told to reload instead
ROLLOUT_DEVICE_ROWS = 200  # rollouts up to this size also stream their device rows

Snapshot = dict[str, Any]


@dataclass(eq=False)  # compared and hashed by identity: one per browser
class Subscriber:
    """One browser's mailbox: holds at most one pending event."""

    merge: bool
    pending: Snapshot | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, payload: Snapshot) -> None:
        """Keep `payload` (merged into an untaken diff, or replacing an untaken snapshot)."""
        if self.merge and self.pending is not None:
            self.pending["changed"].update(payload["changed"])
        else:
            self.pending = (
                {**payload, "changed": dict(payload["changed"])} if self.merge else payload
            )
        self.ready.set()

    async def take(self, timeout: float) -> Snapshot | None:
        """The pending event, or None after `timeout` seconds."""
        with suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.ready.wait(), timeout)
        self.ready.clear()
        payload, self.pending = self.pending, None
        return payload


@dataclass
class Stream:
    """A poller shared by the subscribers of one stream key."""

    key: str
    compute: Callable[[Session, Snapshot | None], Snapshot | None]
    interval: float
    merge: bool
    subscribers: set[Subscriber] = field(default_factory=set)
    task: asyncio.Task[None] | None = None
    state: Snapshot | None = None  # what compute returned last (the diff base)
    last: Snapshot | None = None  # the last snapshot offered (late joiners get it)


class LiveHub:
    """Every live stream of one app."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.streams: dict[str, Stream] = {}

    @contextmanager
    def subscribe(self, key: str) -> Iterator[Subscriber]:
        """Join stream `key` (starting its poller) for the duration of the block."""
        stream = self.streams.get(key)
        if stream is None:
            compute, merge = _computer(key)
            stream = Stream(key, compute, INTERVAL_S[key.split(":")[0]], merge)
            self.streams[key] = stream
        sub = Subscriber(merge=stream.merge)
        if stream.last is not None and not stream.merge:
            sub.offer(stream.last)
        stream.subscribers.add(sub)
        if stream.task is None or stream.task.done():
            stream.task = asyncio.create_task(self._poll(stream), name=f"live-{key}")
        try:
            yield sub
        finally:
            stream.subscribers.discard(sub)

    async def _poll(self, stream: Stream) -> None:
        while stream.subscribers:
            began = time.monotonic()
            try:
                result = await run_in_threadpool(self._read, stream)
            except Exception:  # a failed read skips one tick; the stream goes on
                _LOGGER.exception("live stream %s: read failed", stream.key)
                result = None
            if result is not None:
                stream.last = result
                for sub in list(stream.subscribers):
                    sub.offer(result)
            await asyncio.sleep(max(0.0, stream.interval - (time.monotonic() - began)))
        self.streams.pop(stream.key, None)

    def _read(self, stream: Stream) -> Snapshot | None:
        with Session(self.engine) as session:
            if stream.merge:
                now = _device_states(session)
                before, stream.state = stream.state, now
                if before is None:
                    return None  # the page was rendered from the database a moment ago
                changed: dict[str, list[Any] | None] = {
                    k: v for k, v in now.items() if before.get(k) != v
                }
                changed.update(dict.fromkeys(before.keys() - now.keys()))  # revoked: gone
                if not changed:
                    return None
                if len(changed) > MAX_DEVICE_CHANGES:
                    return {"reload": True, "changed": {}}
                return {"changed": changed}
            snapshot = stream.compute(session, stream.last)
            return None if snapshot == stream.last else snapshot


def _computer(key: str) -> tuple[Callable[[Session, Snapshot | None], Snapshot | None], bool]:
    kind, _, arg = key.partition(":")
    if kind == "fleet":
        return _fleet, False
    if kind == "devices":
        return (lambda _s, _l: None), True
    return (lambda session, _last: _rollout(session, arg)), False


def _fleet(session: Session, _last: Snapshot | None) -> Snapshot:
    """The overview's counts in one grouped query (fleet_summary reads every device's state:
    90 ms at 10,000 devices, too much to repeat every two seconds)."""
    now = utcnow()
    table: Any = Device.__table__  # type: ignore[attr-defined]
    erring = erring_devices(now)
    fresh = table.c.last_seen >= now - STALE_AFTER
    has_errors = table.c.id.in_(erring)
    query = (
        select(table.c.online, fresh, has_errors, func.count())
        .where(table.c.revoked_at.is_(None))
        .group_by(table.c.online, fresh, has_errors)
    )
    by_health: dict[str, int] = {}
    total = online = 0
    for is_online, is_fresh, errors, n in session.execute(query):
        health = (
            "offline"
            if not is_online
            else "stale"
            if not is_fresh
            else "errors"
            if errors
            else "ok"
        )
        by_health[health] = by_health.get(health, 0) + int(n)
        total += int(n)
        online += int(n) if is_online else 0
    return {"total": total, "online": online, "by_health": by_health}


def _device_states(session: Session) -> dict[str, list[Any]]:
    table: Any = Device.__table__  # type: ignore[attr-defined]
    rows = session.execute(
        select(table.c.id, table.c.online, table.c.active_model).where(table.c.revoked_at.is_(None))
    )
    return {device_id: [bool(online), model] for device_id, online, model in rows}


def _rollout(session: Session, rollout_id: str) -> Snapshot:
    try:
        rollout = service.get_rollout(session, rollout_id)
    except ApiError:
        return {"missing": True}
    public = service.to_public(session, rollout)
    data: Snapshot = public.model_dump(
        mode="json", include={"id", "status", "current_wave", "reason", "waves", "counts"}
    )
    if sum(public.counts.values()) <= ROLLOUT_DEVICE_ROWS:
        data["devices"] = [
            {"id": d.device_id, "state": d.state, "sub_status": d.sub_status, "detail": d.detail}
            for d in service.devices_of(session, rollout_id)
        ]
    return data


router = APIRouter(include_in_schema=False)


@router.get("/live/{kind}")
async def live(
    request: Request,
    kind: str,
    rollout_id: Annotated[str, Query(alias="id", max_length=64)] = "",
) -> StreamingResponse:
    """`text/event-stream` of one stream: fleet, devices or rollout (with `id`)."""
    if kind not in INTERVAL_S or (kind == "rollout") != bool(rollout_id):
        raise ApiError(
            404, "not_found", "live streams: /live/fleet, /live/devices, /live/rollout?id=ID"
        )
    hub = _hub(request)
    # The token is checked in a session closed at once: a stream must not hold a pooled
    # connection for its whole life (SessionDep would, until the response ends).
    await run_in_threadpool(_signed_in, request, hub.engine)
    key = f"rollout:{rollout_id}" if kind == "rollout" else kind

    async def events() -> AsyncIterator[str]:
        ends = time.monotonic() + STREAM_MAX_S
        with hub.subscribe(key) as sub:
            yield f"retry: {RETRY_MS}\n\n"
            while (left := ends - time.monotonic()) > 0:
                payload = await sub.take(min(KEEPALIVE_S, left))
                yield f"data: {json.dumps(payload)}\n\n" if payload else ": keepalive\n\n"

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


def _signed_in(request: Request, engine: Engine) -> None:
    with Session(engine) as session:
        current_viewer(request, session)


def _hub(request: Request) -> LiveHub:
    hub: LiveHub | None = getattr(request.app.state, "live", None)
    if hub is None:
        hub = request.app.state.live = LiveHub(request.app.state.engine)
    return hub
