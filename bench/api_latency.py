"""API latency under concurrent load: p50/p99 per endpoint against a real uvicorn control plane.

    .venv/bin/python bench/api_latency.py [--clients 32] [--seconds 15] [--devices 200]
        [--samples 60] [--database-url URL] [--py-spy OUT.svg]

Seeds a database with devices (enrolled through the API) and an hour of telemetry each,
starts `uvicorn controlplane.main:create_app --factory` in its own process, then N async
httpx clients request a mix of endpoints as fast as they can. Client and server share the
machine's cores, so it also prints the CPU time each side spent per request (from
/proc/<pid>/stat and os.times), which is the figure to compare across changes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import httpx
from sqlmodel import Session

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from controlplane import crud  # noqa: E402
from controlplane.core.db import make_engine, migrate  # noqa: E402
from controlplane.db_models import Role  # noqa: E402
from controlplane.telemetry_store import insert_samples, sample_rows  # noqa: E402
from models import protocol  # noqa: E402
from tests.support.mosquitto import MosquittoBroker, free_port  # noqa: E402


def process_cpu_s(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def own_cpu_s() -> float:
    """User + system CPU seconds of this (client) process."""
    times = os.times()
    return times.user + times.system


@contextmanager
def control_plane(data_dir: Path, database_url: str, **env: str) -> Iterator[tuple[str, str, int]]:
    """Migrate, create an admin token, run uvicorn in a subprocess; yields (url, token, pid)."""
    migrate(database_url)
    engine = make_engine(database_url)
    with Session(engine) as session:
        _row, token = crud.create_api_token(session, name="bench", role=Role.admin)
    engine.dispose()
    port = free_port()
    environ = {
        **os.environ,
        "EDGEFLEET_CP_DATA_DIR": str(data_dir),
        "EDGEFLEET_CP_DATABASE_URL": database_url,
        "EDGEFLEET_CP_PORT": str(port),
        "EDGEFLEET_CP_MQTT_CP_PASSWORD": env.pop("mqtt_password", "bench-cp"),
        "EDGEFLEET_CP_ENROLL_RATE_PER_MINUTE": "0",  # the bench enrolls its whole fleet at once
        **{f"EDGEFLEET_CP_{k.upper()}": v for k, v in env.items()},
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "controlplane.main:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=REPO,
        env=environ,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/api/v1/openapi.json", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("control plane did not start")
            time.sleep(0.2)
        yield url, token, proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def bridged_control_plane(
    database_url: str = "", **env: str
) -> Iterator[tuple[MosquittoBroker, tuple[str, str, int], str]]:
    """A real Mosquitto (the shipped config) and `control_plane` with its MQTT bridge on
    against it, in a temporary directory (SQLite there unless `database_url`); yields
    (broker, (url, token, pid), database url)."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        database_url = database_url or f"sqlite:///{work}/cp.db"
        broker = MosquittoBroker(work / "mqtt")
        broker.set_users({})
        broker.start()
        try:
            bridge = {
                "mqtt_enabled": "true",
                "mqtt_host": broker.host,
                "mqtt_port": str(broker.port),
                "broker_password_file": str(broker.password_file),
                "broker_acl_file": str(broker.acl_file),
                "broker_pid": str(broker.pid),
            }
            with control_plane(work / "cp", database_url, **bridge, **env) as cp:
                yield broker, cp, database_url
        finally:
            broker.stop()


def enroll_devices(url: str, token: str, count: int) -> list[dict[str, object]]:
    """Enroll `count` devices through the API; their enrollment responses."""
    headers = {"Authorization": f"Bearer {token}"}
    out = []
    with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
        for i in range(count):
            labels = {"site": random.choice(["lab", "home", "edge"])}
            created = http.post("/api/v1/enrollment-tokens", json={"labels": labels})
            body = {
                "token": created.json()["token"],
                "agent_version": "0.1.0",
                "hardware": {"device_class": "cpu-x86"},
                "name": f"bench-{i}",
            }
            resp = http.post("/api/v1/enroll", json=body)
            resp.raise_for_status()
            out.append(resp.json())
    return out


def seed_telemetry(database_url: str, device_ids: list[str], samples: int) -> None:
    """`samples` one-minute samples per device, ending now."""
    engine = make_engine(database_url)
    now = protocol.utcnow()
    with Session(engine) as session:
        for device_id in device_ids:
            batch = protocol.Telemetry(
                seq=1,
                samples=[
                    protocol.TelemetrySample(
                        ts=now - timedelta(minutes=m),
                        tokens_per_s=random.uniform(20, 60),
                        cpu_percent=50.0,
                    )
                    for m in range(samples)
                ],
            )
            insert_samples(session, sample_rows(device_id, batch))
        session.commit()
    engine.dispose()


async def load(
    url: str, token: str, ids: list[str], clients: int, seconds: float, only: str = ""
) -> dict[str, list[float]]:
    """Run the clients; latencies in ms per endpoint name."""
    endpoints: dict[str, Callable[[], str]] = {
        # limit: every seeded device, as before GET /devices had pagination (default 100)
        "GET /devices": lambda: f"/api/v1/devices?limit={min(len(ids), 1000)}",
        "GET /devices/{id}": lambda: f"/api/v1/devices/{random.choice(ids)}",
        "GET /devices/{id}/telemetry": lambda: f"/api/v1/devices/{random.choice(ids)}/telemetry",
        "GET /telemetry (fleet)": lambda: "/api/v1/telemetry?bucket=300",
        "GET /fleet/summary": lambda: "/api/v1/fleet/summary",
    }
    if only:
        endpoints = {name: path for name, path in endpoints.items() if only in name}
    results: dict[str, list[float]] = {name: [] for name in endpoints}
    errors = 0
    stop_at = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients)

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal errors
        while time.perf_counter() < stop_at:
            name = random.choice(list(endpoints))
            start = time.perf_counter()
            resp = await http.get(endpoints[name]())
            results[name].append((time.perf_counter() - start) * 1000)
            errors += resp.status_code != 200

    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=60) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    if errors:
        print(f"non-200 answers: {errors}")
    return results


def start_py_spy(pid: int, out: str, seconds: float) -> subprocess.Popen[bytes]:
    """py-spy (from this venv) recording the server for the load's duration.

    `OUT.svg` is a flame graph; any other suffix gets py-spy's raw collapsed stacks.
    """
    py_spy = Path(sys.executable).with_name("py-spy")
    fmt = "flamegraph" if out.endswith(".svg") else "raw"
    return subprocess.Popen(
        [
            str(py_spy),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(int(seconds)),
            "--output",
            out,
            "--format",
            fmt,
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
    )


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    """Parse arguments, seed, load, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--samples", type=int, default=60, help="telemetry samples per device")
    parser.add_argument("--database-url", default="", help="default: SQLite in a temp dir")
    parser.add_argument("--only", default="", help="only the endpoints whose name has this")
    parser.add_argument(
        "--py-spy", default="", help="record the server under load (OUT.svg or OUT.txt, raw)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db_url = args.database_url or f"sqlite:///{tmp}/cp.db"
        with control_plane(Path(tmp), db_url) as (url, token, pid):
            started = time.perf_counter()
            ids = [str(d["device_id"]) for d in enroll_devices(url, token, args.devices)]
            seed_telemetry(db_url, ids, args.samples)
            print(
                f"seeded {args.devices} devices x {args.samples} samples "
                f"({db_url.split(':')[0]}) in {time.perf_counter() - started:.1f} s"
            )
            spy = start_py_spy(pid, args.py_spy, args.seconds) if args.py_spy else None
            server_before, client_before = process_cpu_s(pid), own_cpu_s()
            results = asyncio.run(load(url, token, ids, args.clients, args.seconds, args.only))
            server_after = process_cpu_s(pid)
            server_user = server_after[0] - server_before[0]
            server_cpu = server_user + server_after[1] - server_before[1]
            client_cpu = own_cpu_s() - client_before
            if spy is not None:
                spy.wait(args.seconds + 60)
    total = sum(len(v) for v in results.values())
    print(
        f"{args.clients} concurrent clients, {args.seconds:.0f} s: {total} requests, "
        f"{total / args.seconds:.0f} req/s"
    )
    if total:
        print(
            f"CPU per request: server {server_cpu / total * 1000:.2f} ms, "
            f"client {client_cpu / total * 1000:.2f} ms "
            f"(server {server_cpu:.1f} s, {server_user:.1f} s of it user; "
            f"client {client_cpu:.1f} s; "
            f"over {args.seconds:.0f} s)"
        )
    print(f"{'endpoint':32} {'n':>6} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for name, values in results.items():
        if values:
            print(
                f"{name:32} {len(values):6d} {pct(values, 0.5):8.1f} {pct(values, 0.99):8.1f} "
                f"{statistics.fmean(values):8.1f}"
            )


if __name__ == "__main__":
    main()
