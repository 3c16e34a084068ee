"""One enrolled device floods the control plane with valid telemetry: what the others notice.

    .venv/bin/python bench/device_flood.py [--honest 20] [--seconds 20] [--samples 1000]
        [--no-flood] [--budget-scale 1] [--database-url URL]

A real Mosquitto from deploy/mosquitto/edgefleet.conf, a real control plane (uvicorn
subprocess, MQTT bridge on), devices enrolled through the API. `--honest` devices each send a
one-sample telemetry batch a second, as agents do at their fastest setting; one more device,
with its own valid credentials, publishes schema-valid batches of `--samples` samples as fast
as the broker takes them (QoS 1). The database is polled every 0.25 s: an honest sample's
latency is from its timestamp (when it was sent) to the poll that first finds it stored.

Prints the honest samples' latency (p50, p95, max) and how many were stored, what the flooding
device got stored, what the control plane counted against it, and the resident memory of the
control plane and of Mosquitto at the end of the flood.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import psutil
from sqlalchemy import text

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from api_latency import bridged_control_plane, enroll_devices  # noqa: E402

from controlplane.core.db import make_engine  # noqa: E402
from models import protocol  # noqa: E402
from tests.controlplane.helpers import MqttDevice  # noqa: E402
from tests.support.mosquitto import MosquittoBroker  # noqa: E402

POLL_S = 0.25
SETTLE_S = 10.0  # after the flood, how long honest samples may still land


def flood_payloads(samples: int) -> tuple[bytes, bytes]:
    """A valid batch of `samples` samples split around its seq: head + str(seq) + tail."""
    now = protocol.utcnow()
    batch = protocol.Telemetry(
        seq=123456789,
        samples=[
            protocol.TelemetrySample(ts=now - timedelta(milliseconds=i), tokens_per_s=1.0)
            for i in range(samples)
        ],
    )
    head, tail = batch.model_dump_json().encode().split(b"123456789")
    return head, tail


def flood(device: MqttDevice, samples: int, stop: threading.Event) -> int:
    """Publish batches until `stop`; the number the broker accepted."""
    head, tail = flood_payloads(samples)
    sent, seq, pending = 0, 0, []
    while not stop.is_set():
        seq += 1
        pending.append(device.publish("telemetry", head + str(seq).encode() + tail))
        if len(pending) >= 200:  # paho's queue would grow without bound otherwise
            for info in pending:
                info.wait_for_publish(30)
                sent += info.is_published()
            pending = []
    for info in pending:
        info.wait_for_publish(30)
        sent += info.is_published()
    return sent


def honest_loop(devices: list[MqttDevice], stop: threading.Event) -> int:
    """Each device sends a one-sample batch a second until `stop`; batches sent."""
    seq = 0
    while not stop.is_set():
        seq += 1
        for device in devices:
            sample = protocol.TelemetrySample(tokens_per_s=10.0)
            device.publish(
                "telemetry",
                protocol.Telemetry(seq=seq, samples=[sample]).model_dump_json().encode(),
            )
        stop.wait(1.0)
    return seq * len(devices)


def poll_latencies(
    db_url: str, honest: list[str], since: datetime, stop: threading.Event
) -> list[float]:
    """Seconds from each honest sample's timestamp to the poll that first saw it stored."""
    engine = make_engine(db_url)
    seen: set[tuple[str, int]] = set()
    latencies: list[float] = []
    query = text(
        "SELECT device_id, seq, ts FROM telemetry_sample WHERE ts >= :since AND device_id IN ("
        + ",".join(f"'{d}'" for d in honest)
        + ")"
    )
    try:
        while not stop.is_set():
            with engine.connect() as conn:
                rows = conn.execute(query, {"since": since}).all()
            now = datetime.now(timezone.utc)
            for device_id, seq, ts in rows:
                if (device_id, seq) not in seen:
                    seen.add((device_id, seq))
                    ts = datetime.fromisoformat(ts) if isinstance(ts, str) else ts  # SQLite
                    ts = ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)
                    latencies.append((now - ts).total_seconds())
            stop.wait(POLL_S)
    finally:
        engine.dispose()
    return latencies


def count_samples(db_url: str, device_id: str) -> int:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            query = text("SELECT count(*) FROM telemetry_sample WHERE device_id = :d")
            return int(conn.execute(query, {"d": device_id}).scalar_one())
    finally:
        engine.dispose()


def rss_mb(pid: int) -> float:
    """Resident memory of a process, MB."""
    return float(psutil.Process(pid).memory_info().rss) / 2**20


def run(
    broker: MosquittoBroker,
    db_url: str,
    cp: tuple[str, str, int],
    args: argparse.Namespace,
) -> None:
    url, token, cp_pid = cp
    creds = enroll_devices(url, token, args.honest + 1)
    hostile = MqttDevice(broker, creds[0], max_inflight=1000)
    honest = [MqttDevice(broker, c) for c in creds[1:]]
    since = protocol.utcnow() - timedelta(seconds=1)
    stop_poll, stop_send = threading.Event(), threading.Event()
    results: dict[str, Any] = {}
    threads = [
        threading.Thread(
            target=lambda: results.__setitem__(
                "latencies", poll_latencies(db_url, [d.id for d in honest], since, stop_poll)
            )
        ),
        threading.Thread(
            target=lambda: results.__setitem__("honest", honest_loop(honest, stop_send))
        ),
    ]
    if not args.no_flood:
        threads.append(
            threading.Thread(
                target=lambda: results.__setitem__("flood", flood(hostile, args.samples, stop_send))
            )
        )
    for thread in threads:
        thread.start()
    time.sleep(args.seconds)
    memory = f"control plane {rss_mb(cp_pid):.0f} MB, Mosquitto {rss_mb(broker.pid or 0):.0f} MB"
    stop_send.set()
    time.sleep(SETTLE_S)
    stop_poll.set()
    for thread in threads:
        thread.join()
    latencies = sorted(results["latencies"])
    headers = {"Authorization": f"Bearer {token}"}
    counters = httpx.get(f"{url}/api/v1/ingest/counters", headers=headers, timeout=30).json()
    against = {r["counter"]: r["count"] for r in counters if r["device_id"] == hostile.id}
    for device in [hostile, *honest]:
        device.client.loop_stop()
        device.client.disconnect()
    stored = count_samples(db_url, hostile.id)
    print(
        f"{args.honest} honest devices, {args.seconds} s, "
        + ("no flood" if args.no_flood else f"flood of {args.samples}-sample batches")
        + f", device budget x{args.budget_scale:g}"
    )
    print(f"honest samples stored: {len(latencies)}/{results['honest']}")
    if latencies:
        p95 = latencies[int(0.95 * (len(latencies) - 1))]
        print(
            f"honest latency s: p50 {statistics.median(latencies):.2f}  p95 {p95:.2f}  "
            f"max {latencies[-1]:.2f}"
        )
    if not args.no_flood:
        print(
            f"flooding device: {results['flood']} batches accepted by the broker, "
            f"{stored} samples stored ({stored / args.seconds:.0f}/s); "
            f"counted against it: {against}"
        )
    print(f"resident memory as the flood ended: {memory}")


def main() -> None:
    """Parse arguments, run, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--honest", type=int, default=20, help="devices that behave")
    parser.add_argument("--seconds", type=int, default=20, help="how long the flood lasts")
    parser.add_argument("--samples", type=int, default=1000, help="samples per flood batch")
    parser.add_argument("--no-flood", action="store_true", help="the honest devices alone")
    parser.add_argument("--budget-scale", type=float, default=1.0, help="0: no device budget")
    parser.add_argument("--database-url", default="", help="default: SQLite in a temp dir")
    args = parser.parse_args()
    scale = str(args.budget_scale)
    with bridged_control_plane(args.database_url, device_budget_scale=scale) as running:
        broker, cp, db_url = running
        run(broker, db_url, cp, args)


if __name__ == "__main__":
    main()
