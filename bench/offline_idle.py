"""Agent CPU while its broker is away: an enrolled agent process, broker up, then down.

    .venv/bin/python bench/offline_idle.py [--seconds 30] [--telemetry-interval 10]

Starts Mosquitto and one agent process (AgentNode with the fake engine, real MQTT client,
outbox, telemetry thread), lets it connect, then measures the agent's CPU (user + system,
all threads) over a window with the broker up and over one with the broker stopped. The
target is under 1 % of one core offline. Prints figures; it is not a pass/fail test.
"""

from __future__ import annotations

import argparse
import base64
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.fleet.enroll import Enrollment, save_enrollment  # noqa: E402
from models.protocol import ArtifactAccess, MqttAccess  # noqa: E402
from tests.support.mosquitto import MosquittoBroker  # noqa: E402

DEVICE = "bench-offline"
PASSWORD = "bench-pw"

AGENT = """
import logging, signal, sys, threading
from pathlib import Path
from agent.fleet.daemon import AgentNode, NodeOptions
from agent.fleet.enroll import load_enrollment
from agent.runtime import ModelRuntime
from tests.e2e.fakes import fake_engines, pick_first
logging.basicConfig(level=logging.WARNING)
data = Path(sys.argv[1])
options = NodeOptions(data_dir=data, engine_factory=fake_engines(), select=pick_first,
                      hardware={"device_class": "cpu-x86"}, device_class="cpu-x86",
                      telemetry_interval_s=float(sys.argv[2]), check_memory=False)
node = AgentNode(load_enrollment(data), ModelRuntime(), options)
node.start()
done = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: done.set())
done.wait()
node.stop()
"""


def cpu_percent(process: psutil.Process, seconds: float) -> float:
    """The process's CPU over `seconds`, in percent of one core."""
    before = process.cpu_times()
    start = time.monotonic()
    time.sleep(seconds)
    after = process.cpu_times()
    used = (after.user - before.user) + (after.system - before.system)
    return 100.0 * used / (time.monotonic() - start)


def main() -> None:
    """Run the bench and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each window")
    parser.add_argument("--telemetry-interval", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ef-offline-") as tmp:
        work = Path(tmp)
        broker = MosquittoBroker(work / "broker")
        broker.set_users({DEVICE: PASSWORD})
        broker.start()
        key = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        data = work / "agent"
        save_enrollment(
            data,
            Enrollment(
                device_id=DEVICE,
                mqtt=MqttAccess(
                    host=broker.host,
                    port=broker.device_port,
                    username=DEVICE,
                    password=PASSWORD,
                    client_id=DEVICE,
                ),
                artifacts=ArtifactAccess(base_url="http://127.0.0.1:9/none", token="x"),
                signing_public_key=base64.b64encode(key).decode(),
            ),
        )
        agent = subprocess.Popen(
            [sys.executable, "-c", AGENT, str(data), str(args.telemetry_interval)], cwd=ROOT
        )
        try:
            process = psutil.Process(agent.pid)
            time.sleep(3.0)  # imports, start, connect
            online = cpu_percent(process, args.seconds)
            broker.stop()
            time.sleep(1.0)
            offline = cpu_percent(process, args.seconds)
        finally:
            agent.terminate()
            agent.wait(timeout=20)
            broker.stop()
    print(f"agent CPU, broker up:   {online:.3f} % of one core over {args.seconds:g} s")
    print(
        f"agent CPU, broker down: {offline:.3f} % of one core over {args.seconds:g} s "
        f"(target < 1 %; telemetry every {args.telemetry_interval:g} s)"
    )


if __name__ == "__main__":
    main()
