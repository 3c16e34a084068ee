"""Telemetry ingest: batches persisted per second from N simulated devices, and how many got lost.

    .venv/bin/python bench/telemetry_ingest.py [--devices 200] [--batches 20]
        [--interval 0.5] [--samples 1] [--database-url URL]

A real Mosquitto from deploy/mosquitto/edgefleet.conf, a real control plane (uvicorn
subprocess, MQTT bridge on), devices enrolled through the API, and agent.fleetsim.fleet sending
telemetry (QoS 1) with each device's own credentials. Persisted samples are counted through
the API.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import timedelta
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from api_latency import bridged_control_plane, enroll_devices  # noqa: E402

from agent.fleetsim.fleet import DeviceSpec, FleetSimulator  # noqa: E402
from models import protocol  # noqa: E402
from tests.support.mosquitto import MosquittoBroker  # noqa: E402

STALL_S = 15.0  # stop waiting when the persisted count has not moved for this long


def persisted_samples(http: httpx.Client, since: str) -> int:
    """Samples stored since `since`, summed over the fleet."""
    resp = http.get("/api/v1/telemetry", params={"from": since, "bucket": 86400})
    resp.raise_for_status()
    return sum(int(p["count"]) for p in resp.json()["points"])


async def send(
    specs: list[DeviceSpec], broker: MosquittoBroker, args: argparse.Namespace
) -> tuple[float, float, int]:
    """Connect the fleet, send; (connect seconds, send seconds, batches sent)."""
    sim = FleetSimulator(specs, host=broker.host, port=broker.port)
    started = time.perf_counter()
    await sim.start(timeout_s=300)
    connected = time.perf_counter()
    await sim.run_telemetry(interval_s=args.interval, batches=args.batches, samples=args.samples)
    sent_at = time.perf_counter()
    await asyncio.sleep(1.0)  # let the last PUBACKs arrive before disconnecting
    await sim.stop()
    return connected - started, sent_at - connected, sim.stats.telemetry_sent


def main() -> None:
    """Parse arguments, run, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--batches", type=int, default=20, help="batches per device")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between batches")
    parser.add_argument("--samples", type=int, default=1, help="samples per batch")
    parser.add_argument("--database-url", default="", help="default: SQLite in a temp dir")
    args = parser.parse_args()
    with bridged_control_plane(args.database_url) as (broker, (url, token, _pid), db_url):
        started = time.perf_counter()
        creds = enroll_devices(url, token, args.devices)
        print(f"enrolled {args.devices} devices in {time.perf_counter() - started:.1f} s")
        specs = [
            DeviceSpec(str(c["device_id"]), str(c["mqtt"]["password"]))  # type: ignore[index]
            for c in creds
        ]
        since = (protocol.utcnow() - timedelta(minutes=1)).isoformat()
        t0 = time.perf_counter()
        connect_s, send_s, sent = asyncio.run(send(specs, broker, args))
        expected = sent * args.samples
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
            stored, last_change, done_at = -1, time.perf_counter(), time.perf_counter()
            while time.perf_counter() - last_change < STALL_S:
                now_stored = persisted_samples(http, since)
                if now_stored != stored:
                    stored, last_change = now_stored, time.perf_counter()
                    done_at = last_change
                if stored >= expected:
                    break
                time.sleep(0.25)
        ingest_s = done_at - t0 - connect_s
    print(
        f"{args.devices} devices connected in {connect_s:.1f} s "
        f"({args.devices / connect_s:.0f} connects/s)"
    )
    print(
        f"sent {sent} batches x {args.samples} samples in {send_s:.1f} s "
        f"(offered {sent / send_s:.0f} batches/s)"
    )
    print(
        f"persisted {stored}/{expected} samples; lost {expected - stored}; "
        f"{stored / args.samples / ingest_s:.0f} batches/s and {stored / ingest_s:.0f} samples/s "
        f"from first send to last write ({db_url.split(':')[0]})"
    )


if __name__ == "__main__":
    main()
