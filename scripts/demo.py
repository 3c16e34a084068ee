"""The README demo: a broker, a control plane, one real agent, a rollout and a chat completion.

    python scripts/demo.py [--once] [--state-dir DIR] [--all-variants]

Starts Mosquitto (the shipped config on a free port), the control plane on SQLite, turns
SmolLM2-135M-Instruct (a real model, fetched once into the model cache) into a signed model
directory with `edgefleet-models build FILE.gguf` (kept under the state dir, so a rerun with
the same --state-dir reuses it), starts an agent, enrolls it, rolls the model out to it, asks
it a factual question through its OpenAI endpoint and prints the answer, the dashboard
address and an admin token. Ctrl-C stops everything. With --once (or EDGEFLEET_DEMO_ONCE=1)
it exits 0 when the answer is right and non-zero with the reason otherwise. --all-variants
builds SmolLM2's Hugging Face checkpoint into every variant the pipeline can make instead.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from controlplane.broker_tls import load_or_create_ca, write_broker_tls  # noqa: E402
from tests.support.mosquitto import MOSQUITTO, MosquittoBroker, free_port  # noqa: E402

DEMO_MODEL = "smollm2-135m-instruct"
DEMO_VERSION = "1.0"
QUESTION = "What is the capital of France?"
# SmolLM2's own template adds a default system prompt under which this 4-bit 135M model
# rambles when greedy ("L'Étoile, la Cité, ..."); a plain one gets the plain answer.
SYSTEM = "You are a helpful assistant."
EXPECTED = "Paris"


class DemoError(Exception):
    """A step failed; the message says which and why."""


def wait_for(what: str, check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except (httpx.HTTPError, OSError) as exc:
            last = exc
        time.sleep(0.3)
    why = f" ({last})" if last else ""
    raise DemoError(f"timed out after {timeout:.0f} s waiting for {what}{why}")


STOP_TIMEOUT_S = 10.0


def _signal_group(proc: subprocess.Popen[bytes], signum: int) -> None:
    try:
        os.killpg(proc.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _stop_on_signals() -> None:
    """SIGTERM and SIGHUP end the demo like Ctrl-C: through `finally`, which stops the children."""

    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGHUP, interrupt)


class Demo:
    def __init__(self, state: Path) -> None:
        self.state = state
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def spawn(
        self, name: str, argv: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = (self.state / f"{name}.log").open("ab")
        # Its own process group: Ctrl-C reaches only the demo, which then stops every group in
        # order, grandchildren (llama-server, say) included.
        proc = subprocess.Popen(
            argv,
            cwd=REPO,
            env={**os.environ, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append((name, proc))
        return proc

    def stop(self) -> None:
        """SIGTERM every process group the demo started (newest first), SIGKILL after 10 s."""
        for _name, proc in reversed(self.procs):
            _signal_group(proc, signal.SIGTERM)
        for _name, proc in reversed(self.procs):
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
            _signal_group(proc, signal.SIGKILL)  # what is left of its group
        self.procs.clear()

    def check_alive(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                tail = (self.state / f"{name}.log").read_text(errors="replace")[-1500:]
                raise DemoError(f"{name} exited with {proc.returncode}:\n{tail}")

    def start_broker(self) -> tuple[int, int, int]:
        """Mosquitto with the shipped config on free ports, its files under the state dir."""
        mqtt_dir = self.state / "mosquitto"
        mqtt_dir.mkdir(parents=True, exist_ok=True)
        # The control plane's CA (in its data dir: enrollment hands it to the agent) signs the
        # device listener's certificate; the plaintext listener is the control plane's.
        tls_dir = self.state / "cp" / "mqtt-tls"
        tls = write_broker_tls(
            load_or_create_ca(tls_dir / "ca.crt", tls_dir / "ca.key"),
            mqtt_dir,
            ["127.0.0.1", "localhost"],
        )
        broker = MosquittoBroker(mqtt_dir, tls=tls)
        config = broker.write_config()
        if not Path(MOSQUITTO).exists():
            raise DemoError("mosquitto is not installed: apt-get install mosquitto")
        proc = self.spawn("mosquitto", [MOSQUITTO, "-c", str(config)])
        port = broker.port
        wait_for("mosquitto", lambda: socket.create_connection(("127.0.0.1", port), 0.2), 15)
        return port, broker.device_port, proc.pid

    def cp_env(self, port: int, mqtt_port: int, tls_port: int, broker_pid: int) -> dict[str, str]:
        mqtt_dir = self.state / "mosquitto"
        return {
            "EDGEFLEET_CP_DATA_DIR": str(self.state / "cp"),
            "EDGEFLEET_CP_HOST": "127.0.0.1",
            "EDGEFLEET_CP_PORT": str(port),
            "EDGEFLEET_CP_MQTT_ENABLED": "true",
            "EDGEFLEET_CP_MQTT_HOST": "127.0.0.1",
            "EDGEFLEET_CP_MQTT_PORT": str(tls_port),
            "EDGEFLEET_CP_MQTT_TLS": "true",
            "EDGEFLEET_CP_MQTT_CP_URL": f"mqtt://127.0.0.1:{mqtt_port}",
            "EDGEFLEET_CP_BROKER_PASSWORD_FILE": str(mqtt_dir / "passwd"),
            "EDGEFLEET_CP_BROKER_ACL_FILE": str(mqtt_dir / "acl"),
            "EDGEFLEET_CP_BROKER_PID": str(broker_pid),
        }


def build_demo_model(state: Path, *, all_variants: bool) -> Path:
    """SmolLM2-135M-Instruct as a signed model directory, built once per state dir.

    By default its GGUF is signed as it is (seconds); with `all_variants` its Hugging Face
    checkpoint is built into every variant the pipeline can make (minutes).
    """
    out = state / "models" / (f"{DEMO_MODEL}-all" if all_variants else DEMO_MODEL)
    if (out / "manifest.json").is_file() and (out / "manifest.sig").is_file():
        return out
    from models.real_models import SMOLLM2, RealModelError, fetch_gguf, hf_checkpoint

    try:
        src = hf_checkpoint(SMOLLM2) if all_variants else fetch_gguf(SMOLLM2)
    except RealModelError as exc:
        raise DemoError(f"cannot fetch {SMOLLM2.filename}: {exc}") from exc
    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    build = [
        sys.executable,
        "-m",
        "models.cli",
        "build",
        str(src),
        "--out",
        str(staging),
        "--name",
        DEMO_MODEL,
        "--version",
        DEMO_VERSION + ("-all" if all_variants else ""),
        "--key",
        str(state / "demo-signing-key.pem"),
    ]
    if all_variants:
        build.append("--keep-going")  # sign what built; the rest is named on stderr
    done = subprocess.run(build, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise DemoError(f"edgefleet-models build {src.name} failed: {done.stderr.strip()[-800:]}")
    for line in done.stderr.splitlines():
        if line.startswith("not built:"):
            print(f"  {line}")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(staging, out)
    return out


def run(args: argparse.Namespace) -> int:
    state = Path(args.state_dir or tempfile.mkdtemp(prefix="edgefleet-demo-"))
    state.mkdir(parents=True, exist_ok=True)
    demo = Demo(state)
    _stop_on_signals()
    try:
        print(f"state and logs in {state}")
        mqtt_port, tls_port, broker_pid = demo.start_broker()
        print(
            f"mosquitto: devices on mqtts://127.0.0.1:{tls_port}, "
            f"the control plane on mqtt://127.0.0.1:{mqtt_port}"
        )
        cp_port = free_port()
        env = demo.cp_env(cp_port, mqtt_port, tls_port, broker_pid)
        cp = [sys.executable, "-m", "controlplane.cli"]
        token = subprocess.run(
            [*cp, "create-admin-token", "--name", "demo"],
            cwd=REPO,
            env={**os.environ, **env},
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()[0]
        demo.spawn("controlplane", [*cp, "serve"], env)
        url = f"http://127.0.0.1:{cp_port}"
        http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        wait_for("the control plane", lambda: http.get("/api/v1/rollouts").status_code == 200, 60)
        print(f"control plane at {url}")

        source = "checkpoint into every variant" if args.all_variants else "GGUF"
        print(f"building (or reusing) {DEMO_MODEL} from its {source} ...")
        from models.manifest import Manifest

        model_dir = build_demo_model(state, all_variants=args.all_variants)
        manifest = Manifest.load(model_dir)
        resp = http.post("/api/v1/models/import", json={"path": str(model_dir), "resign": True})
        if resp.status_code not in (201, 409):
            raise DemoError(f"model import failed: {resp.text}")
        print(f"registered {manifest.ref}: {', '.join(v.id for v in manifest.variants)}")

        enroll_token = http.post(
            "/api/v1/enrollment-tokens", json={"labels": {"site": "demo"}}
        ).json()["token"]
        agent_port = free_port()
        demo.spawn(
            "agent",
            [
                sys.executable,
                "-m",
                "agent.cli",
                "serve",
                "--control-plane",
                url,
                "--port",
                str(agent_port),
            ],
            {
                "EDGEFLEET_AGENT_DATA_DIR": str(state / "agent"),
                "EDGEFLEET_AGENT_ENROLLMENT_TOKEN": enroll_token,
                "EDGEFLEET_AGENT_MQTT_URL": f"mqtts://127.0.0.1:{tls_port}",
            },
        )

        def device_online() -> str | None:
            demo.check_alive()
            online = [d for d in http.get("/api/v1/devices").json() if d.get("online")]
            return str(online[0]["id"]) if online else None

        device = wait_for("the agent to enroll and connect", device_online, 120)
        print(f"agent {device} enrolled and online; its API is http://127.0.0.1:{agent_port}")
        body = {
            "model": manifest.ref,
            "selector": {"device_ids": [device]},
            "strategy": {"waves": [{"percent": 100}], "device_timeout_s": 300},
        }
        rollout = http.post("/api/v1/rollouts", json=body).json()
        print(f"rollout {rollout['id']} of {manifest.ref} started")

        def finished() -> dict[str, Any] | None:
            demo.check_alive()
            shown: dict[str, Any] = http.get(f"/api/v1/rollouts/{rollout['id']}").json()
            return shown if shown["status"] not in ("scheduled", "running") else None

        shown = wait_for("the rollout", finished, 300)
        if shown["status"] != "succeeded":
            rows = http.get(f"/api/v1/rollouts/{rollout['id']}/devices").json()
            why = rows[0]["detail"] if rows else shown["reason"]
            raise DemoError(f"rollout {shown['status']}: {why}")
        print(f"rollout succeeded: {device} serves {manifest.ref}")

        agent = f"http://127.0.0.1:{agent_port}"
        chat = {
            "model": manifest.name,
            "max_tokens": 48,
            "temperature": 0,
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": QUESTION},
            ],
        }
        answer = httpx.post(f"{agent}/v1/chat/completions", json=chat, timeout=120)
        if answer.status_code != 200:
            raise DemoError(f"chat failed: HTTP {answer.status_code} {answer.text[:300]}")
        content = answer.json()["choices"][0]["message"]["content"]
        print(f"\n{QUESTION}\n{manifest.ref} on {device} answers:\n  {content.strip()}\n")
        shown = httpx.post(f"{agent}/api/show", json={"model": manifest.name}, timeout=30)
        info = shown.json().get("edgefleet", {}) if shown.status_code == 200 else {}
        template = answer.headers.get("X-EdgeFleet-Chat-Template", "?")
        print(f"  ({info.get('engine')} on {info.get('device')}, chat template: {template})\n")
        right = EXPECTED.lower() in content.lower()
        if not right:
            print(f"the answer does not mention {EXPECTED}", file=sys.stderr)
        print(f"dashboard: {url}/   admin token: {token}")
        if args.once:
            return 0 if right else 1
        print("running; Ctrl-C stops everything")
        while True:
            demo.check_alive()
            time.sleep(1)
    except KeyboardInterrupt:
        print("\nstopping")
        return 0
    except (DemoError, subprocess.CalledProcessError, httpx.HTTPError) as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        demo.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--once",
        action="store_true",
        default=os.environ.get("EDGEFLEET_DEMO_ONCE") == "1",
        help="exit after the chat completion (0 on success)",
    )
    parser.add_argument("--state-dir", help="where to keep state and logs (default: a temp dir)")
    parser.add_argument(
        "--all-variants",
        action="store_true",
        help="build SmolLM2's Hugging Face checkpoint into every variant the "
        "pipeline can (GGUF, ONNX, OpenVINO; minutes) instead of signing its "
        "GGUF as it is",
    )
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
