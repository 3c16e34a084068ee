"""`edgefleet-agent serve`: the local REST API over one model, or the fleet daemon."""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from agent.cli.common import (
    CliError,
    benchmark_results,
    resolve_model,
    settings_from,
)
from agent.config import AgentSettings
from agent.keepalive import parse_keep_alive
from agent.model_loading import LoadedModel, installed_engines, open_model, probe_profile
from agent.runtime import ModelRuntime

_LOGGER = logging.getLogger(__name__)


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve a model (local fallback), or hand over to the fleet daemon."""
    settings = settings_from(
        args,
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        model_path=args.model,
        engine=args.engine,
        control_plane_url=args.control_plane,
        keep_alive=args.keep_alive,
        benchmark_engines=args.benchmark_engines,
        parallel=args.parallel,
    )
    if settings.model_path is None and settings.control_plane_url:
        try:
            from agent.fleet import daemon  # type: ignore[attr-defined,unused-ignore]
        except ImportError as exc:
            raise CliError(
                "fleet mode (--control-plane) needs agent.fleet.daemon, which this build lacks; "
                "serve a local model with --model PATH"
            ) from exc
        daemon.run(settings)
        return 0
    try:
        keep_alive = parse_keep_alive(settings.keep_alive)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    # Checked before listening: a model that cannot be served is the operator's mistake, and
    # exit code 2 says so at once (systemd shows it) instead of an agent that serves nothing.
    model_path = (
        None
        if settings.model_path is None
        else resolve_model(str(settings.model_path), settings, settings.engine)
    )
    from agent.model_pull import PullSettings
    from agent.server.app import create_app
    from agent.server.limits import RequestLimits
    from agent.server.serve import serve

    runtime = ModelRuntime(max_waiting=settings.queue_depth, keep_alive=keep_alive)
    app = create_app(runtime, api_key=settings.api_key, limits=RequestLimits.of(settings))
    app.state.pull_settings = PullSettings.of(settings)  # Ollama's /api/pull
    if settings.host not in ("127.0.0.1", "localhost", "::1") and not settings.api_key:
        _LOGGER.warning("serving on %s without an API key; set --api-key", settings.host)
    asyncio.run(
        serve(
            app,
            runtime,
            host=settings.host,
            port=settings.port,
            load=None if model_path is None else _loader(runtime, model_path, settings),
            log_level=settings.log_level,
        )
    )
    return 0


def _loader(
    runtime: ModelRuntime, path: Path, settings: AgentSettings
) -> Callable[[], Awaitable[LoadedModel]]:
    """The background load; a failure stays in `runtime.load_error`, which /readyz shows."""

    results = benchmark_results(settings)

    def open_here() -> LoadedModel:
        return open_model(
            path,
            profile=probe_profile(),
            installed=installed_engines(),
            prefer=settings.engine,
            options=settings.load_options(),
            benchmark_results=results,
        )

    async def load() -> LoadedModel:
        # load_with keeps open_here for idle reloads; those find the benchmark cached.
        return await asyncio.to_thread(runtime.load_with, open_here)

    return load
