"""Build the control plane app: `create_app(settings) -> FastAPI`."""

from __future__ import annotations

import gc
import logging
import shutil
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from controlplane import __version__
from controlplane.api.downloads import OpenDownloads
from controlplane.api.errors import install_error_handlers
from controlplane.api.inputs import CleanInput
from controlplane.api.limits import RequestLimit
from controlplane.api.main import api_router
from controlplane.api.rate_limit import enrollment_limiter
from controlplane.audit.trail import AuditTrail
from controlplane.bridge import run_bridge
from controlplane.broker_sync import sync_broker
from controlplane.commands import run_command_results
from controlplane.core.config import Settings
from controlplane.core.db import make_engine, migrate
from controlplane.dashboard import install_dashboard
from controlplane.ingest_process import run_ingest_process
from controlplane.metrics import install_metrics
from controlplane.rollouts.controller import run_rollouts
from controlplane.signing_key import load_signing_identity
from controlplane.telemetry_retention import run_telemetry_retention

_LOGGER = logging.getLogger(__name__)
STALE_UPLOAD_S = 3600.0  # an upload in flight writes every second; one this quiet was cut off


def _remove_stale_uploads(settings: Settings) -> None:
    """Delete what uploads cut off by a crash or restart left in <data_dir>/uploads."""
    uploads = settings.data_dir / "uploads"
    if not uploads.is_dir():
        return
    cutoff = time.time() - STALE_UPLOAD_S
    for work in uploads.iterdir():
        touched = [work.lstat().st_mtime, *(f.lstat().st_mtime for f in work.rglob("*"))]
        if max(touched) < cutoff:
            _LOGGER.info("removing %s, left by an upload that did not finish", work)
            if work.is_dir():
                shutil.rmtree(work, ignore_errors=True)
            else:
                work.unlink()


def _prepare(app: FastAPI) -> None:
    """Blocking startup work: schema, signing key, broker files."""
    settings: Settings = app.state.settings
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_uploads(settings)
    if settings.auto_migrate:
        migrate(settings.database_url)
    app.state.signing = load_signing_identity(settings)
    with Session(app.state.engine) as session:
        sync_broker(session, settings)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Prepare, then run background services (the MQTT bridge, the rollout controller)."""
    await run_in_threadpool(_prepare, app)
    settings: Settings = app.state.settings
    async with AsyncExitStack() as services:
        if settings.mqtt_enabled and settings.ingest_process:
            # bridge, writer, recorders and rollout controller: controlplane/ingest_process.py
            await services.enter_async_context(run_ingest_process(app))
            await services.enter_async_context(run_telemetry_retention(app))
        else:
            await services.enter_async_context(run_bridge(app))
            await services.enter_async_context(run_telemetry_retention(app))
            await services.enter_async_context(run_rollouts(app))
            await services.enter_async_context(run_command_results(app))
        _LOGGER.info("control plane ready (%s)", app.state.settings.public_url)
        if getattr(app.state, "freeze_heap_after_start", False):
            # What start-up made lives as long as the process: out of the collector's reach,
            # a full collection scans ~10x fewer objects (255-528 ms every 6-8 s during the
            # 10,000-device bench, each one a cluster of slow page reads; 2-24 ms after).
            gc.freeze()
        yield
    app.state.engine.dispose()


def create_app(settings: Settings | None = None) -> FastAPI:
    """The control plane app; state lives on `app.state` (settings, engine, signing)."""
    settings = settings or Settings()
    app = FastAPI(
        title="EdgeFleet control plane",
        version=__version__,
        lifespan=lifespan,
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
    )
    app.state.settings = settings
    app.state.engine = make_engine(settings.database_url)
    app.state.enroll_limiter = enrollment_limiter(settings.enroll_rate_per_minute)
    app.state.downloads = OpenDownloads()
    install_error_handlers(app)
    app.include_router(api_router)
    install_dashboard(app)
    install_metrics(app)
    app.add_middleware(AuditTrail, engine=app.state.engine)
    app.add_middleware(CleanInput)
    app.add_middleware(RequestLimit)
    return app
