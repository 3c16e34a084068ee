"""The telemetry retention job: roll raw samples up into hourly rows, on a timer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session

from controlplane.telemetry_store import RollupResult, roll_up
from models.protocol import utcnow

_LOGGER = logging.getLogger(__name__)

FIRST_RUN_DELAY_S = 5.0  # let startup finish before the first pass


def run_retention(engine: Engine, *, keep: timedelta, now: datetime | None = None) -> RollupResult:
    """One pass in one transaction: aggregate whole hours older than `keep`, delete their rows."""
    with Session(engine) as session:
        result = roll_up(session, now=now or utcnow(), keep=keep)
        session.commit()
    if result.raw_deleted:
        _LOGGER.info(
            "telemetry rollup: %s raw samples before %s folded into %s hourly rows",
            result.raw_deleted,
            result.cutoff.isoformat(),
            result.hourly_rows,
        )
    return result


async def retention_loop(engine: Engine, *, keep: timedelta, interval: timedelta) -> None:
    """Run `run_retention` every `interval` until cancelled; a failed pass is logged."""
    await asyncio.sleep(FIRST_RUN_DELAY_S)
    while True:
        try:
            await asyncio.to_thread(run_retention, engine, keep=keep)
        except Exception:
            _LOGGER.exception("telemetry rollup failed; retrying in %s", interval)
        await asyncio.sleep(interval.total_seconds())


@asynccontextmanager
async def run_telemetry_retention(app: Any) -> AsyncIterator[None]:
    """Lifespan service: the retention loop as a background task."""
    settings = app.state.settings
    task = asyncio.create_task(
        retention_loop(
            app.state.engine,
            keep=settings.telemetry_raw_retention,
            interval=settings.telemetry_retention_interval,
        )
    )
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
