"""Fleet scale: a 4-wave rollout to N simulated devices over one Mosquitto and one control plane.

    python bench/fleet_scale.py --devices 1000

Mosquitto runs with deploy/mosquitto/edgefleet.conf; the control plane runs as `edgefleet-cp
serve` (SQLite, or --postgres), its ingest in a child process; the devices are
agent.fleetsim.fleet's simulated agents in this process with a rollout behaviour
(RolloutBehaviour: fail probability, health-check failures, slow downloads). It reports the
seconds until every device's initial retained state was recorded, the seconds the rollout took
(created to finished, by the control plane's clock), telemetry messages persisted per second
and how many were lost, the API's p99 latency during the rollout, and the CPU seconds each
process used from the moment the API answered (the control plane's with its child).

During the rollout a second probe, in its own process (the simulator's loop holds this one's
GIL), signs in to the dashboard as a browser does (GET /login, POST the token, keep the
cookies) and reads what an operator would have open: the overview, the rollout's page, the
device list's first and a later page, a device's page and the fleet charts, and the live
streams those pages hold open (time to the first event: the snapshot for fleet and rollout,
the stream's start for devices). Three streams stay open all along, as three browser tabs
would, so their pollers run. p50/p99 per page and overall, and every read over 200 ms (page
or API) with its time into the rollout: slow reads of several pages at the same moment are
the control plane waiting, not one page's cost. The LAST line is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import psutil  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from sqlalchemy import text  # noqa: E402
from sqlmodel import Session  # noqa: E402

from agent.fleetsim.fleet import DeviceSpec, FleetSimulator, RolloutBehaviour  # noqa: E402
from controlplane import crud  # noqa: E402
from controlplane.broker_auth import hash_password  # noqa: E402
from controlplane.broker_sync import control_plane_mqtt_password, sync_broker  # noqa: E402
from controlplane.core.config import Settings  # noqa: E402
from controlplane.core.db import make_engine, migrate  # noqa: E402
from controlplane.db_models import Role  # noqa: E402
from controlplane.security import hash_token  # noqa: E402
from tests.e2e.fakes import publish_fake_model  # noqa: E402
from tests.e2e.harness import cp_settings  # noqa: E402
from tests.support.mosquitto import MosquittoBroker  # noqa: E402


def seed_devices(settings: Settings, n: int) -> dict[str, str]:
    """Insert n devices directly (enrollment one by one would SIGHUP the broker n times)."""
    passwords = {f"sim-{i:05d}": f"pw-{i}" for i in range(n)}
    shared_hash = hash_password("pw-shared")
    engine = make_engine(settings.database_url)
    with Session(engine) as session:
        for i, device_id in enumerate(passwords):
            crud.create_device(
                session,
                device_id=device_id,
                name=device_id,
                device_class="cpu-x86",
                agent_version="fleetsim",
                hardware={},
                labels={"fleet": "bench"},
                mqtt_password_hash=shared_hash,
                artifact_token_hash=hash_token(f"t-{i}"),
            )
        session.commit()
        sync_broker(session, settings)
    engine.dispose()
    return dict.fromkeys(passwords, "pw-shared")


def api_probe(
    http: httpx.Client,
    rollout_id: str,
    stop: threading.Event,
    out: list[float],
    slow: list[tuple[str, float, float]],
) -> None:
    """GET the rollout and a device page in a loop, recording each latency in ms, and the
    reads over SLOW_MS in `slow` as (path, wall-clock time, ms)."""
    paths = [f"/api/v1/rollouts/{rollout_id}", "/api/v1/rollouts", "/api/v1/models"]
    i = 0
    while not stop.is_set():
        at, started = time.time(), time.perf_counter()
        try:
            http.get(paths[i % len(paths)])
        except httpx.TransportError:  # a dropped keep-alive connection: counted as its time
            pass
        ms = (time.perf_counter() - started) * 1000
        out.append(ms)
        if ms > SLOW_MS:
            slow.append((f"API {paths[i % len(paths)]}", at, ms))
        i += 1
        time.sleep(0.05)


DASHBOARD_PAUSE_S = 0.1  # between two dashboard reads: one busy operator, not a load test
SLOW_MS = 200.0  # reads slower than this are listed with the time they started
LIVE_STREAMS = ("fleet", "devices", "rollout")
DEVICES_PAGE = 200  # controlplane.dashboard.routes.DEVICES_PAGE


def dashboard_pages(rollout_id: str, devices: int) -> dict[str, str]:
    """What the probe reads, by the name it reports: pages, then live streams."""
    later = max(devices // DEVICES_PAGE // 2, 1)
    return {
        "overview": "/",
        "rollout": f"/rollouts/{rollout_id}",
        "devices": "/devices",
        "devices_later_page": f"/devices?page={later}",
        "device": "/devices/sim-00000",
        "fleet": "/fleet",
        "live_fleet": "/live/fleet",
        "live_devices": "/live/devices",
        "live_rollout": f"/live/rollout?id={rollout_id}",
    }


def dashboard_login(base_url: str, token: str) -> httpx.Client:
    """A client holding the dashboard's cookies, signed in the way a browser is."""
    client = httpx.Client(base_url=base_url, timeout=60, follow_redirects=False)
    client.get("/login").raise_for_status()  # the CSRF cookie, as the form would get it
    signed = client.post("/login", data={"token": token})
    assert signed.status_code == 303 and "edgefleet_token" in client.cookies, signed.text
    return client


def _first_event(client: httpx.Client, path: str, want_data: bool) -> bool:
    """Open a live stream and read until its first event (or its first line); whether 200."""
    with client.stream("GET", path) as response:
        if response.status_code != 200:
            return False
        for line in response.iter_lines():
            if line.startswith("data:") or (line and not want_data):
                break
    return True


def _hold_stream(client: httpx.Client, path: str, stop: Any) -> None:
    """Keep a live stream open, as a browser tab does, reconnecting when it ends."""
    while not stop.is_set():
        with contextlib.suppress(httpx.HTTPError), client.stream("GET", path) as response:
            for _line in response.iter_lines():
                if stop.is_set():
                    return
        time.sleep(0.2)


def dashboard_probe(
    base_url: str, token: str, rollout_id: str, devices: int, stop: Any, out: Any
) -> None:
    """Read the dashboard in a loop until `stop`; send {name: [ms, ...]}, errors and the reads
    over SLOW_MS (name, wall-clock time, ms) to `out`."""
    pages = dashboard_pages(rollout_id, devices)
    latencies: dict[str, list[float]] = {name: [] for name in pages}
    slow: list[tuple[str, float, float]] = []
    errors: dict[str, int] = {}
    client = dashboard_login(base_url, token)
    holders = [
        threading.Thread(
            target=_hold_stream,
            args=(
                httpx.Client(base_url=base_url, timeout=60, cookies=client.cookies),
                pages[f"live_{kind}"],
                stop,
            ),
            daemon=True,
        )
        for kind in LIVE_STREAMS
    ]
    for holder in holders:
        holder.start()
    names = list(pages)
    for name in names:  # not counted: the first read of a page compiles its template
        with contextlib.suppress(httpx.HTTPError):
            if name.startswith("live_"):
                _first_event(client, pages[name], want_data=False)
            else:
                client.get(pages[name])
    i = 0
    while not stop.is_set():
        name = names[i % len(names)]
        at, started = time.time(), time.perf_counter()
        try:
            if name.startswith("live_"):
                ok = _first_event(client, pages[name], want_data=name != "live_devices")
            else:
                ok = client.get(pages[name]).status_code == 200
        except httpx.HTTPError:
            ok = False
        ms = (time.perf_counter() - started) * 1000
        latencies[name].append(ms)
        if ms > SLOW_MS:
            slow.append((name, at, ms))
        if not ok:
            errors[name] = errors.get(name, 0) + 1
        i += 1
        time.sleep(DASHBOARD_PAUSE_S)
    out.put({"latencies": latencies, "errors": errors, "slow": slow})


def percentiles(values: list[float]) -> dict[str, float]:
    """p50, p99 and the slowest in ms (0 when there are too few values), and how many.

    Inclusive: with the 30-40 reads a page gets, the default (exclusive) method put p99 past
    the slowest read, extrapolated from the two slowest."""
    if len(values) < 3:
        return {"p50": 0.0, "p99": 0.0, "max": 0.0, "n": len(values)}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {
        "p50": round(cuts[49], 1),
        "p99": round(cuts[98], 1),
        "max": round(max(values), 1),
        "n": len(values),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    """Run the broker, control plane and simulated fleet; return the measured figures."""
    work = Path(tempfile.mkdtemp(prefix="fleet-scale-"))
    broker = MosquittoBroker(work / "mqtt")
    broker.start()
    database_url = fresh_postgres(args.postgres) if args.postgres else ""
    settings = cp_settings(work / "cp", broker, database_url=database_url)
    settings.data_dir.mkdir(parents=True)
    migrate(settings.database_url)
    passwords = seed_devices(settings, args.devices)
    engine = make_engine(settings.database_url)
    with Session(engine) as session:
        _row, token = crud.create_api_token(session, name="bench", role=Role.admin)
        _row, operator_token = crud.create_api_token(
            session, name="bench-dashboard", role=Role.operator
        )
    env = {
        **os.environ,
        "EDGEFLEET_CP_DATA_DIR": str(settings.data_dir),
        "EDGEFLEET_CP_PORT": str(settings.port),
        "EDGEFLEET_CP_MQTT_ENABLED": "true",
        "EDGEFLEET_CP_MQTT_HOST": broker.host,
        "EDGEFLEET_CP_MQTT_PORT": str(broker.port),
        "EDGEFLEET_CP_MQTT_CP_PASSWORD": control_plane_mqtt_password(settings),
        "EDGEFLEET_CP_MQTT_CP_CLIENT_ID": settings.mqtt_cp_client_id,
        "EDGEFLEET_CP_BROKER_PASSWORD_FILE": str(broker.password_file),
        "EDGEFLEET_CP_BROKER_ACL_FILE": str(broker.acl_file),
        "EDGEFLEET_CP_BROKER_PID": str(broker.pid),
        "EDGEFLEET_CP_DATABASE_URL": settings.database_url,
    }
    log = (work / "cp.log").open("ab")
    cp = subprocess.Popen(
        [sys.executable, "-m", "controlplane.cli", "serve"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    assert broker.pid is not None, "mosquitto did not start"
    procs = {
        "controlplane": psutil.Process(cp.pid),
        "mosquitto": psutil.Process(broker.pid),
        "simulator": psutil.Process(),
    }
    http = httpx.Client(
        base_url=settings.public_url, timeout=60, headers={"Authorization": f"Bearer {token}"}
    )
    fleet: FleetSimulator | None = None
    try:
        for _ in range(300):
            try:
                if http.get("/api/v1/models").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
        # From here: the control plane's startup (imports, migrations) is not counted.
        cpu_before = {name: _cpu_s(p, name == "controlplane") for name, p in procs.items()}
        model_dir = publish_fake_model(work / "models", Ed25519PrivateKey.generate(), "1.0")
        imported = http.post("/api/v1/models/import", json={"path": str(model_dir), "resign": True})
        assert imported.status_code == 201, imported.text
        specs = [DeviceSpec(device_id=d, password=p) for d, p in passwords.items()]
        behaviour = RolloutBehaviour(args.fail_p, args.health_fail_p)
        fleet = FleetSimulator(
            specs, host=broker.host, port=broker.port, telemetry_qos=1, on_desired=behaviour
        )
        started = time.perf_counter()
        await fleet.start(timeout_s=600)
        print(
            f"{args.devices} devices connected in {time.perf_counter() - started:.1f} s", flush=True
        )
        online = 0
        while online < args.devices and time.perf_counter() - started < 600:
            with engine.connect() as conn:
                online = int(
                    conn.execute(text("SELECT COUNT(*) FROM device WHERE online")).scalar() or 0
                )
            await asyncio.sleep(0.2)
        states_s = time.perf_counter() - started
        print(
            f"{online} initial states recorded {states_s:.1f} s after the first connect", flush=True
        )
        telemetry = asyncio.ensure_future(
            fleet.run_telemetry(interval_s=args.telemetry_interval, batches=args.batches)
        )
        body = {
            "model": "tiny:1.0",
            "selector": {"labels": {"fleet": "bench"}},
            "strategy": {
                "waves": [{"percent": 1}, {"percent": 10}, {"percent": 50}, {"percent": 100}],
                "success_threshold": 0.9,
                "failure_threshold": 0.2,
                "device_timeout_s": 600,
            },
        }
        rollout_started, rollout_wall = time.perf_counter(), time.time()
        rollout = http.post("/api/v1/rollouts", json=body).json()
        latencies: list[float] = []
        slow: list[tuple[str, float, float]] = []
        stop = threading.Event()
        probe = threading.Thread(
            target=api_probe,
            args=(
                httpx.Client(base_url=settings.public_url, timeout=60, headers=http.headers),
                rollout["id"],
                stop,
                latencies,
                slow,
            ),
            daemon=True,
        )
        probe.start()
        spawn = multiprocessing.get_context("spawn")
        dash_stop, dash_out = spawn.Event(), spawn.Queue()
        dash_probe = spawn.Process(
            target=dashboard_probe,
            args=(
                settings.public_url,
                operator_token,
                rollout["id"],
                args.devices,
                dash_stop,
                dash_out,
            ),
            daemon=True,
        )
        if args.dashboard:
            dash_probe.start()
        status = "running"
        while status in ("scheduled", "running"):
            await asyncio.sleep(1.0)
            try:
                shown = await asyncio.to_thread(http.get, f"/api/v1/rollouts/{rollout['id']}")
            except httpx.TransportError as exc:  # once seen: a keep-alive connection reset
                print(f"status poll failed ({exc!r}); asking again", flush=True)
                continue
            status = shown.json()["status"]
            if args.verbose:
                print(
                    status,
                    [(w["succeeded"], w["devices"]) for w in shown.json()["waves"]],
                    flush=True,
                )
        seen_s = time.perf_counter() - rollout_started
        stop.set()
        dash_stop.set()
        dashboard: dict[str, Any] = {"latencies": {}, "errors": {}, "slow": []}
        if args.dashboard:
            dashboard = await asyncio.to_thread(dash_out.get, timeout=120)
            dash_probe.join(timeout=30)
        # The control plane's own clock: the poll above wakes late while the simulator's loop
        # is saturated (seconds at 10,000 devices), which would count against the rollout.
        ended = shown.json()
        rollout_s = seen_s
        if ended.get("finished_at"):
            finished = datetime.fromisoformat(ended["finished_at"])
            rollout_s = (finished - datetime.fromisoformat(ended["created_at"])).total_seconds()
        print(f"rollout {status} after {rollout_s:.1f} s (seen after {seen_s:.1f} s)", flush=True)
        print(f"load average during the rollout: {os.getloadavg()}", flush=True)
        tel_started = time.perf_counter()
        await telemetry
        sent = fleet.stats.telemetry_sent
        deadline = time.monotonic() + 120
        persisted = 0
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                count = conn.execute(text("SELECT COUNT(*) FROM telemetry_sample")).scalar()
            persisted = int(count or 0)
            if persisted >= sent:
                break
            await asyncio.sleep(1)
        tel_s = time.perf_counter() - tel_started + seen_s
        api = percentiles(latencies)
        by_page = {name: percentiles(ms) for name, ms in dashboard["latencies"].items()}
        overall = percentiles([ms for each in dashboard["latencies"].values() for ms in each])
        for name, figures in by_page.items():
            print(
                f"dashboard {name}: p50 {figures['p50']} ms, p99 {figures['p99']} ms, "
                f"slowest {figures['max']} ms",
                flush=True,
            )
        # Whether slow reads are each page's own cost or the whole process waiting at once.
        stalls = sorted((at - rollout_wall, ms, name) for name, at, ms in slow + dashboard["slow"])
        for offset, ms, name in stalls:
            print(f"slow read at {offset:5.1f} s into the rollout: {name} {ms:.0f} ms", flush=True)
        cpu = {
            name: round(_cpu_s(p, name == "controlplane") - cpu_before[name], 1)
            for name, p in procs.items()
        }
        return {
            "devices": args.devices,
            "database": engine.dialect.name,
            "initial_states_seconds": round(states_s, 1),
            "rollout_seconds": round(rollout_s, 1),
            "rollout_status": status,
            "telemetry_msgs_per_s": round(persisted / max(tel_s, 1e-9), 1),
            "telemetry_lost": max(sent - persisted, 0),
            "api_p99_ms": api["p99"],
            "api_p50_ms": api["p50"],
            "dashboard_p50_ms": overall["p50"],
            "dashboard_p99_ms": overall["p99"],
            "dashboard_ms": by_page,
            "dashboard_errors": dashboard["errors"],
            "slow_reads": [[round(t, 1), round(ms), name] for t, ms, name in stalls],
            "cpu_seconds": cpu,
            "load_average": [round(x, 2) for x in os.getloadavg()],
        }
    finally:
        if fleet is not None:
            await fleet.stop()
        cp.terminate()
        cp.wait(timeout=30)
        broker.stop()
        engine.dispose()
        if args.postgres:
            import psycopg

            with psycopg.connect(args.postgres, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{engine.url.database}" WITH (FORCE)')


def fresh_postgres(dsn: str) -> str:
    """A new, empty database on the server `dsn` points at; its SQLAlchemy URL."""
    import psycopg

    name = f"fleet_scale_{os.getpid()}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    base = dsn.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    return f"{base}/{name}"


def _cpu_s(proc: psutil.Process, children: bool) -> float:
    """User + system seconds of the process (and its children: the control plane's ingest)."""
    total = 0.0
    for each in [proc, *(proc.children(recursive=True) if children else [])]:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = each.cpu_times()
            total += times.user + times.system
    return total


def main() -> None:
    """Parse the arguments, run the scenario and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--fail-p", type=float, default=0.01, help="per-device failure chance")
    parser.add_argument(
        "--health-fail-p", type=float, default=0.01, help="per-device health-check failure chance"
    )
    parser.add_argument("--telemetry-interval", type=float, default=5.0)
    parser.add_argument("--batches", type=int, default=6, help="telemetry batches per device")
    parser.add_argument(
        "--postgres",
        metavar="DSN",
        default="",
        help="run on a fresh PostgreSQL database made through this server, e.g. "
        "postgresql://postgres@127.0.0.1:5432/postgres (default: SQLite)",
    )
    parser.add_argument(
        "--no-dashboard",
        dest="dashboard",
        action="store_false",
        help="leave the dashboard alone (its probe's reads cost the control plane CPU)",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    result = asyncio.run(main_async(parser.parse_args()))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
