"""`edgefleet-agent serve`: the local REST API over one model, or the fleet daemon."""

from __future__ import annotations

import argparse
import asyncio
import logging

from agent.cli_common import CliError, load_options, resolve_model, settings_from
from agent.runtime import LoadedModel, ModelRuntime, parse_keep_alive

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
    )
    if settings.model_path is None and settings.control_plane_url:
        try:
            from agent import daemon  # type: ignore[attr-defined,unused-ignore]
        except ImportError as exc:
            raise CliError(
                "fleet mode (--control-plane) needs agent.daemon, which this build lacks; "
                "serve a local model with --model PATH"
            ) from exc
        daemon.run(settings)
        return 0
    from agent.server.app import create_app
    from agent.server.serve import serve

    try:
        keep_alive = parse_keep_alive(settings.keep_alive)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    runtime = ModelRuntime(max_waiting=settings.queue_depth, keep_alive=keep_alive)
    app = create_app(runtime, api_key=settings.api_key)
    model_path = settings.model_path

    async def load() -> LoadedModel:
        assert model_path is not None
        path = await asyncio.to_thread(resolve_model, str(model_path), settings, settings.engine)
        return await runtime.load_model(
            path, prefer=settings.engine, options=load_options(settings)
        )

    if settings.host not in ("127.0.0.1", "localhost", "::1") and not settings.api_key:
        _LOGGER.warning("serving on %s without an API key; set --api-key", settings.host)
    asyncio.run(
        serve(
            app,
            runtime,
            host=settings.host,
            port=settings.port,
            load=load if model_path is not None else None,
            log_level=settings.log_level,
        )
    )
    return 0
