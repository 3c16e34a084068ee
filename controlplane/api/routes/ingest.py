"""What the MQTT ingest path dropped, per device (viewer role)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from controlplane.api.deps import SessionDep, ViewerDep
from controlplane.ingest_counters import IngestCounterPublic, by_device

router = APIRouter(prefix="/ingest", tags=["ingest"])


@router.get("/counters", response_model=list[IngestCounterPublic])
def ingest_counters(
    session: SessionDep,
    _viewer: ViewerDep,
    limit: Annotated[int, Query(ge=1, le=1000, description="rows, highest count first")] = 100,
    device_id: Annotated[
        str | None, Query(max_length=64, description="only this device's counters")
    ] = None,
) -> list[IngestCounterPublic]:
    """What the ingest dropped, by device and reason (`invalid`, `throttled`, `future_samples`,
    `rejected`, `quarantined`, ...: docs/controlplane.md), kept across restarts."""
    return by_device(session, limit=limit, device_id=device_id)
