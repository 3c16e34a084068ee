"""Fleet mode's entry point: probe, enroll, serve the REST API, run the AgentNode.

Under the supervisor (agent/fleet/supervisor.py) a switch to a new agent version ends the process
with RESTART_EXIT so that the supervisor starts the new one.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

from agent.fleet.daemon import AGENT_VERSION, AgentNode, NodeOptions, _mqtt_override
from agent.fleet.enroll import ensure_enrolled
from agent.fleet.supervisor import RESTART_EXIT, ROOT_ENV
from agent.model_loading import probe_profile
from agent.runtime import ModelRuntime
from agent.server.metrics import ServingMetrics

_LOGGER = logging.getLogger(__name__)


def run_fleet(settings: Any) -> None:
    """Fleet mode for `edgefleet-agent serve`: enroll if needed, then serve until stopped."""
    from agent.engines.registry import create_engine, installed_engines
    from agent.keepalive import parse_keep_alive
    from agent.model_pull import PullSettings
    from agent.selection import select_variant
    from agent.server.app import create_app
    from agent.server.limits import RequestLimits
    from agent.server.serve import serve

    data_dir = Path(settings.data_dir)
    profile = probe_profile()
    hardware = profile.model_dump(mode="json")  # what the control plane stores and shows
    enrollment = ensure_enrolled(
        settings.control_plane_url,
        settings.enrollment_token,
        data_dir,
        hardware=hardware,
        agent_version=AGENT_VERSION,
    )
    installed = installed_engines()
    metrics = ServingMetrics()
    runtime = ModelRuntime(
        max_waiting=settings.queue_depth,
        observer=metrics,
        keep_alive=parse_keep_alive(settings.keep_alive),
    )
    host, port, tls = _mqtt_override(settings.mqtt_url)
    if getattr(settings, "benchmark_engines", False):
        # The variant is chosen before its files are downloaded, so there is nothing to time.
        _LOGGER.warning(
            "benchmark_engines is ignored in fleet mode: rollouts keep the static "
            "choice (see docs/agent.md)"
        )
    app = create_app(
        runtime, api_key=settings.api_key, metrics=metrics, limits=RequestLimits.of(settings)
    )
    app.state.pull_settings = PullSettings.of(settings)  # Ollama's /api/pull
    restart = threading.Event()

    def request_restart() -> None:  # a new agent version is current: exit for the supervisor
        restart.set()
        os.kill(os.getpid(), signal.SIGTERM)

    root = os.environ.get(ROOT_ENV)
    options = NodeOptions(
        data_dir=data_dir,
        engine_factory=create_engine,
        select=lambda manifest: select_variant(manifest, profile, installed),
        hardware=hardware,
        device_class=profile.device_class,
        mqtt_host=host,
        mqtt_port=port,
        mqtt_tls=tls,
        parallel=getattr(settings, "parallel", None),
        load_options=settings.load_options(),
        set_api_key_sha256=lambda digest: setattr(app.state, "api_key_sha256", digest),
        api_key_sha256=hashlib.sha256(settings.api_key.encode()).hexdigest()
        if settings.api_key
        else "",
        agent_root=Path(root) if root else None,
        request_restart=request_restart,
    )
    node = AgentNode(enrollment, runtime, options, serving=metrics)
    node.start()
    try:
        asyncio.run(
            serve(
                app, runtime, host=settings.host, port=settings.port, log_level=settings.log_level
            )
        )
    finally:
        node.stop()
    if restart.is_set():
        raise SystemExit(RESTART_EXIT)
