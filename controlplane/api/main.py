"""The `/api/v1` router: one line per resource (H7/H8 add theirs here)."""

from __future__ import annotations

from fastapi import APIRouter

from controlplane.api.errors import ERROR_RESPONSES
from controlplane.api.routes import (
    agent_releases,
    artifacts,
    audit,
    commands,
    device_settings,
    devices,
    enrollment,
    ingest,
    models,
    rollouts,
    telemetry,
    tokens,
    utils,
)

api_router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)
api_router.include_router(utils.router)
api_router.include_router(tokens.router)
api_router.include_router(enrollment.router)
api_router.include_router(devices.router)
api_router.include_router(device_settings.router)
api_router.include_router(models.router)
api_router.include_router(artifacts.router)
api_router.include_router(agent_releases.router)
api_router.include_router(telemetry.router)
api_router.include_router(rollouts.router)
api_router.include_router(commands.router)
api_router.include_router(ingest.router)
api_router.include_router(audit.router)
