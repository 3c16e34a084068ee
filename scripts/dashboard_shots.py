"""Screenshots of the dashboard's pictures on a seeded fleet, to check that they read well.

    .venv/bin/python scripts/dashboard_shots.py --out /tmp/shots

Seeds a throwaway control plane (SQLite) with 24 devices of three classes running two models,
six hours of telemetry, a rollout in its second wave and one device with a model history;
then headless Chromium saves fleet.png, rollout.png, device.png and overview.png.
"""

from __future__ import annotations

import argparse
import math
import random
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

import uvicorn
from sqlmodel import Session

from controlplane import crud, telemetry_retention
from controlplane.core.config import Settings
from controlplane.db_models import Device, DeviceLabel, Model, ModelVersion, Role
from controlplane.main import create_app
from controlplane.rollouts.models import Rollout, RolloutDevice
from controlplane.telemetry_store import insert_samples, sample_rows
from models import protocol

CHROMIUM = "/usr/bin/chromium"
CLASSES = {"jetson": (42.0, 90.0), "intel-igpu": (24.0, 160.0), "cpu-x86": (11.0, 320.0)}
MODELS = ("llama-3.2-1b:1.1", "qwen2.5-0.5b:2.0")


def seed(session: Session) -> str:
    """The fleet; returns the id of the device with a model history."""
    rng = random.Random(7)
    now = protocol.utcnow()
    for name in {m.split(":")[0] for m in MODELS} | {"llama-3.2-1b"}:
        row = Model(name=name)
        session.add(row)
        session.flush()
        for version in {m.split(":")[1] for m in MODELS if m.startswith(name)} | {"1.0"}:
            session.add(
                ModelVersion(
                    model_id=row.id or 0,
                    version=version,
                    key_id="k",
                    manifest_json="{}",
                    signature_json="{}",
                )
            )
    ids = []
    for i in range(24):
        klass = list(CLASSES)[i % 3]
        model = MODELS[i % 2]
        device_id = f"dev-{i:03d}"
        ids.append(device_id)
        session.add(
            Device(
                id=device_id,
                name=f"shop-{i:02d}",
                device_class=klass,
                mqtt_password_hash="x",
                artifact_token_hash=f"h{i}",
                online=i % 7 != 0,
                active_model=model,
                last_seen=now,
            )
        )
        session.flush()
        session.add(DeviceLabel(device_id=device_id, key="site", value=f"shop{i % 4}"))
        tps, ttft = CLASSES[klass]
        tps *= 1.0 if model.startswith("qwen") else 0.7
        samples = []
        for m in range(0, 360, 3):
            wave = 1 + 0.15 * math.sin(m / 40 + i)
            samples.append(
                protocol.TelemetrySample(
                    ts=now - timedelta(minutes=m),
                    tokens_per_s=tps * wave * rng.uniform(0.9, 1.1),
                    ttft_ms=ttft / wave * rng.uniform(0.9, 1.1),
                    requests=20,
                    errors=1 if (klass == "cpu-x86" and 60 < m < 120) else 0,
                    cpu_percent=50.0,
                    temperature_c=55.0,
                )
            )
        insert_samples(session, sample_rows(device_id, protocol.Telemetry(seq=1, samples=samples)))
    rollout = Rollout(
        id="ro-5f2c0a1e9b7d",
        model_name="qwen2.5-0.5b",
        model_version="2.0",
        manifest_url="x",
        status="running",
        current_wave=1,
        strategy={"waves": [{"count": 2}, {"percent": 50}, {"percent": 100}]},
        selector={},
        created_by="ada",
        started_at=now - timedelta(minutes=20),
    )
    session.add(rollout)
    states = (
        ["succeeded", "succeeded"]
        + ["succeeded"] * 6
        + ["in_progress"] * 3
        + ["failed"]
        + ["queued"] * 12
    )
    for n, (device_id, state) in enumerate(zip(ids, states, strict=True)):
        wave = 0 if n < 2 else 1 if n < 12 else 2
        session.add(
            RolloutDevice(
                rollout_id=rollout.id,
                device_id=device_id,
                wave=wave,
                state=state,
                dispatched_at=now - timedelta(minutes=18 - n / 2),
                updated_at=now - timedelta(minutes=10 - n / 3),
            )
        )
    history = [
        ("ro-1a", "llama-3.2-1b", "1.0", "succeeded", 300, 290),
        ("ro-2b", "llama-3.2-1b", "1.1", "rolled_back", 200, 185),
        ("ro-3c", "llama-3.2-1b", "1.1", "succeeded", 120, 110),
    ]
    for rid, name, version, state, began, ended in history:
        session.add(
            Rollout(
                id=rid,
                model_name=name,
                model_version=version,
                manifest_url="x",
                status="succeeded",
                selector={},
                strategy={},
                created_by="ada",
            )
        )
        session.flush()
        session.add(
            RolloutDevice(
                rollout_id=rid,
                device_id="dev-002",
                state=state,
                dispatched_at=now - timedelta(minutes=began),
                updated_at=now - timedelta(minutes=ended),
            )
        )
    session.commit()
    return "dev-002"


def main() -> None:
    """Seed, serve, shoot."""
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="dashboard-shots", help="directory for the PNGs")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    telemetry_retention.FIRST_RUN_DELAY_S = 3600.0
    work = Path(tempfile.mkdtemp(prefix="ef-shots-"))
    port = 18000 + random.randrange(1000)
    settings = Settings(
        data_dir=work, database_url=f"sqlite:///{work / 'cp.db'}", mqtt_cp_password="pw", port=port
    )
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    with Session(app.state.engine) as session:
        _t, token = crud.create_api_token(session, name="ada", role=Role.admin)
        device_id = seed(session)
    url = f"http://127.0.0.1:{port}"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{url}/login")
        page.fill("#token", token)
        page.click("button[type=submit]")
        page.wait_for_url(f"{url}/")
        for name, path in (
            ("overview", "/"),
            ("fleet", "/fleet?range=6h"),
            ("fleet-class", "/fleet?by=class&range=6h"),
            ("rollout", "/rollouts/ro-5f2c0a1e9b7d"),
            ("device", f"/devices/{device_id}"),
            ("new-rollout", "/rollouts/new"),
            ("enroll", "/enroll"),
            ("tokens", "/tokens"),
        ):
            page.goto(f"{url}{path}")
            if name == "new-rollout":
                page.fill("#labels", "site=shop1")
                page.fill("#waves", "5,ten")
                page.click("#create-rollout")  # refused: shows the field messages
                page.fill("#labels", "site=shop1")
            page.wait_for_timeout(600)
            page.screenshot(path=str(out / f"{name}.png"), full_page=True)
            print(out / f"{name}.png")
        page.goto(f"{url}/audit")
        page.screenshot(path=str(out / "audit.png"), full_page=True)
        print(out / "audit.png")
        browser.close()
    server.should_exit = True


if __name__ == "__main__":
    main()
