"""Per-minute telemetry (telemetry_minute) answers the fleet charts as the samples did.

Every test stores samples through the ingest writer (or insert_samples), then asks the same
question twice, from the samples (`use_minutes=False`, the code before telemetry_minute) and
from the minutes, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from controlplane.ingest_counters import BridgeStats
from controlplane.telemetry_ingest import Inbound, IngestWriter
from controlplane.telemetry_models import METRICS, TELEMETRY_MINUTE, TelemetryPoint
from controlplane.telemetry_reads import chart_window, grouped_metrics, series
from controlplane.telemetry_retention import run_retention
from models import protocol
from tests.controlplane.helpers import enroll, report_model, sql_statements

CHART_METRICS = ("tokens_per_s", "ttft_ms", "requests", "errors")
GROUP_BY: tuple[Literal["active_model", "device_class"], ...] = ("active_model", "device_class")
# (class, model) per device; None: a device that never reported a state.
FLEET: tuple[tuple[str, str] | None, ...] = (
    ("jetson", "tiny:1.0.0"),
    ("jetson", "tiny:1.0.0"),
    ("jetson", "big:2.0.0"),
    ("x86", "tiny:1.0.0"),
    ("x86", "big:2.0.0"),
    None,
)


def engine_of(client: TestClient) -> Engine:
    engine: Engine = client.app.state.engine  # type: ignore[attr-defined]
    return engine


def sample(rng: random.Random, ts: datetime) -> protocol.TelemetrySample:
    return protocol.TelemetrySample(
        ts=ts,
        tokens_per_s=None if rng.random() < 0.2 else round(rng.uniform(1, 50), 3),
        ttft_ms=None if rng.random() < 0.3 else round(rng.uniform(5, 900), 2),
        requests=rng.randint(0, 20),
        queue_depth=rng.randint(0, 3),
        errors=rng.choice((0, 0, 0, 1, 2)),
        cpu_percent=rng.uniform(0, 100),
        mem_used_bytes=rng.randint(1, 2**33),
    )


def write(engine: Engine, batches: list[tuple[str, protocol.Telemetry]]) -> None:
    """Through the ingest writer: one transaction for the lot, as the bridge does."""
    writer = IngestWriter(engine, stats=BridgeStats(), keep_raw=timedelta(days=30))
    received = protocol.utcnow()
    writer.write(
        [
            Inbound(leaf="telemetry", device_id=device_id, message=batch, received_at=received)
            for device_id, batch in batches
        ]
    )


def same_points(new: list[TelemetryPoint], old: list[TelemetryPoint]) -> None:
    assert [(p.t, p.count, p.min, p.max) for p in new] == [
        (p.t, p.count, p.min, p.max) for p in old
    ]
    for a, b in zip(new, old, strict=True):
        assert a.sum == pytest.approx(b.sum, rel=1e-12)
        assert a.avg == pytest.approx(b.avg, rel=1e-12)


def same_groups(new: dict[str, Any], old: dict[str, Any]) -> None:
    assert set(new) == set(old)
    for metric in old:
        assert set(new[metric]) == set(old[metric]), metric
        for group in old[metric]:
            same_points(new[metric][group], old[metric][group])


@pytest.fixture
def fleet(cp_client: TestClient, admin_headers: dict[str, str]) -> list[str]:
    """Enrolled devices with the classes and models of FLEET."""
    engine = engine_of(cp_client)
    ids = []
    for groups in FLEET:
        device_id = str(enroll(cp_client, admin_headers)["device_id"])
        if groups is not None:
            with Session(engine) as session:
                report_model(session, device_id, groups[1], device_class=groups[0])
        ids.append(device_id)
    return ids


@pytest.fixture
def base() -> datetime:
    """A whole minute three hours ago: samples lie in the 3 hours after it."""
    now = protocol.utcnow().replace(second=0, microsecond=0)
    return now - timedelta(hours=3)


def fill(engine: Engine, ids: list[str], base: datetime, *, seed: int = 7) -> None:
    """Samples over three hours, several to a minute and a device, in batches that overlap
    minutes, one batch sent twice (stored once) and one stored in a later transaction."""
    rng = random.Random(seed)
    batches: list[tuple[str, protocol.Telemetry]] = []
    for n, device_id in enumerate(ids):
        for seq in range(1, 13):
            first = base + timedelta(minutes=15 * (seq - 1), seconds=rng.uniform(0, 59))
            samples = [
                sample(rng, first + timedelta(seconds=rng.uniform(0, 150))) for _ in range(5)
            ]
            batches.append((device_id, protocol.Telemetry(seq=seq, samples=samples)))
        batches.append(batches[-1 - n])  # redelivered
    write(engine, batches[: len(batches) // 2])
    write(engine, batches[len(batches) // 2 :])
    write(engine, batches[:3])  # a whole batch resent later: nothing new


WINDOWS = [  # (start, end) after base, in seconds: partial minutes at either end or none
    (17.5, 2 * 3600 + 41.25),
    (0, 3 * 3600),
    (-3600, 4 * 3600),
    (61.2, 119.9),  # no whole minute: samples only
    (30, 80),
]


@pytest.mark.parametrize("bucket_s", [60, 180, 240, 900, 90])
def test_fleet_wide_series_from_minutes_equal_the_samples(
    cp_client: TestClient, fleet: list[str], base: datetime, bucket_s: int
) -> None:
    engine = engine_of(cp_client)
    fill(engine, fleet, base)
    with Session(engine) as session:
        for lo, hi in WINDOWS:
            start, end = base + timedelta(seconds=lo), base + timedelta(seconds=hi)
            for metric in METRICS:
                args: dict[str, Any] = {
                    "metric": metric,
                    "start": start,
                    "end": end,
                    "bucket_s": bucket_s,
                }
                new = series(session, **args)
                old = series(session, **args, use_minutes=False)
                same_points(new, old)
                assert new or lo == 30 or metric in ("temperature_c", "power_w")


@pytest.mark.parametrize("group_by", ["active_model", "device_class"])
@pytest.mark.parametrize("bucket_s", [60, 240, 960, 90])
def test_grouped_metrics_from_minutes_equal_the_samples(
    cp_client: TestClient, fleet: list[str], base: datetime, group_by: Any, bucket_s: int
) -> None:
    engine = engine_of(cp_client)
    fill(engine, fleet, base)
    with Session(engine) as session:
        for lo, hi in WINDOWS:
            args: dict[str, Any] = {
                "metrics": CHART_METRICS,
                "start": base + timedelta(seconds=lo),
                "end": base + timedelta(seconds=hi),
                "bucket_s": bucket_s,
                "group_by": group_by,
            }
            same_groups(
                grouped_metrics(session, **args),
                grouped_metrics(session, **args, use_minutes=False),
            )
        whole = {**args, "start": base, "end": base + timedelta(hours=4)}
        groups = grouped_metrics(session, **whole)
    by_model = group_by == "active_model"
    expected = {"tiny:1.0.0", "big:2.0.0", ""} if by_model else {"jetson", "x86", "cpu-x86"}
    assert set(groups["requests"]) == expected


def test_a_device_that_changes_model_mid_window(
    cp_client: TestClient, fleet: list[str], base: datetime
) -> None:
    """The minutes keep each sample with the model its device ran when it sent it (a model
    change, by a rollout say, splits the device's line there); the samples read before, by
    the device's current model, moved its whole history to the new model. Fleet-wide and
    per-class figures are the same either way."""
    engine = engine_of(cp_client)
    hour = base.replace(minute=0) + timedelta(hours=1)  # one whole hourly bucket, in the past
    mover = fleet[0]  # jetson, tiny:1.0.0
    rng = random.Random(3)
    before = [sample(rng, hour + timedelta(minutes=10, seconds=s)) for s in (1, 20, 40)]
    write(engine, [(mover, protocol.Telemetry(seq=1, samples=before))])
    with Session(engine) as session:
        report_model(session, mover, "big:2.0.0", device_class="jetson")
    after = [sample(rng, hour + timedelta(minutes=40, seconds=s)) for s in (1, 20, 40)]
    write(engine, [(mover, protocol.Telemetry(seq=2, samples=after))])
    window: dict[str, Any] = {
        "metrics": ("requests",),
        "start": hour,
        "end": hour + timedelta(hours=1),
        "bucket_s": 3600,
    }
    with Session(engine) as session:
        by_model = grouped_metrics(session, **window, group_by="active_model")["requests"]
        old_by_model = grouped_metrics(
            session, **window, group_by="active_model", use_minutes=False
        )["requests"]
        for group_by in ("device_class",):
            same_groups(
                grouped_metrics(session, **window, group_by=group_by),
                grouped_metrics(session, **window, group_by=group_by, use_minutes=False),
            )
        fleet_args: dict[str, Any] = {
            "metric": "requests",
            "start": hour,
            "end": hour + timedelta(hours=1),
            "bucket_s": 3600,
        }
        same_points(series(session, **fleet_args), series(session, **fleet_args, use_minutes=False))
    assert [p.count for p in by_model["tiny:1.0.0"]] == [3]
    assert [p.sum for p in by_model["tiny:1.0.0"]] == [float(sum(s.requests for s in before))]
    assert [p.count for p in by_model["big:2.0.0"]] == [3]
    assert "tiny:1.0.0" not in old_by_model and [p.count for p in old_by_model["big:2.0.0"]] == [6]


def test_rollup_prunes_the_minutes_with_the_samples(
    cp_client: TestClient, fleet: list[str], base: datetime
) -> None:
    engine = engine_of(cp_client)
    fill(engine, fleet, base)
    now = base + timedelta(hours=3)
    result = run_retention(engine, keep=timedelta(minutes=90), now=now)
    assert result.raw_deleted
    with Session(engine) as session:
        oldest = session.execute(select(func.min(TELEMETRY_MINUTE.c.minute))).scalar_one()
        assert oldest is not None
        assert oldest.replace(tzinfo=timezone.utc) >= result.cutoff
        for bucket_s in (180, 3600):
            args: dict[str, Any] = {"start": base, "end": now, "bucket_s": bucket_s}
            same_points(
                series(session, metric="tokens_per_s", **args),
                series(session, metric="tokens_per_s", **args, use_minutes=False),
            )
            same_groups(
                grouped_metrics(session, metrics=CHART_METRICS, group_by="device_class", **args),
                grouped_metrics(
                    session,
                    metrics=CHART_METRICS,
                    group_by="device_class",
                    use_minutes=False,
                    **args,
                ),
            )


def test_minutes_hold_only_what_was_stored(
    cp_client: TestClient, fleet: list[str], base: datetime
) -> None:
    engine = engine_of(cp_client)
    fill(engine, fleet, base)
    with Session(engine) as session:
        minutes = session.execute(select(func.sum(TELEMETRY_MINUTE.c.requests_count))).scalar_one()
    assert minutes == len(fleet) * 12 * 5


def test_chart_window_is_the_whole_minutes_up_to_the_end_of_now() -> None:
    now = datetime(2026, 11, 30, 12, 34, 56, 789_000, tzinfo=timezone.utc)
    assert chart_window(now, timedelta(hours=6)) == (
        datetime(2026, 11, 30, 6, 34, tzinfo=timezone.utc),
        datetime(2026, 11, 30, 12, 35, tzinfo=timezone.utc),
    )
    on_the_minute = now.replace(second=0, microsecond=0)
    assert chart_window(on_the_minute, timedelta(hours=1))[1] == on_the_minute + timedelta(
        minutes=1
    )


def test_charts_read_the_current_minute_from_the_minutes_alone(
    cp_client: TestClient, fleet: list[str], base: datetime
) -> None:
    """The dashboard's chart windows are whole minutes up to the end of the current one: its
    samples, just written, are in its telemetry_minute row, so the charts read no samples,
    and answer as the samples do over the same window."""
    engine = engine_of(cp_client)
    fill(engine, fleet, base)
    now = protocol.utcnow()
    minute = now.replace(second=0, microsecond=0)
    rng = random.Random(11)
    current = [
        (device_id, protocol.Telemetry(seq=100, samples=[sample(rng, minute + (now - minute) / k)]))
        for k in (1, 2, 4)
        for device_id in fleet
    ]
    write(engine, current)
    start, end = chart_window(now, timedelta(hours=6))
    grouped: dict[str, Any] = {"metrics": CHART_METRICS, "start": start, "end": end}
    with Session(engine) as session, sql_statements(engine) as seen:
        fleet_wide = series(session, metric="requests", start=start, end=end, bucket_s=180)
        by_group = {
            by: grouped_metrics(session, **grouped, bucket_s=240, group_by=by) for by in GROUP_BY
        }
    assert seen and not [sql for sql in seen if "telemetry_sample" in sql]
    with Session(engine) as session:
        args: dict[str, Any] = {"metric": "requests", "start": start, "end": end, "bucket_s": 180}
        same_points(fleet_wide, series(session, **args, use_minutes=False))
        for by, groups in by_group.items():
            same_groups(
                groups,
                grouped_metrics(session, **grouped, bucket_s=240, group_by=by, use_minutes=False),
            )
    assert fleet_wide[-1].t <= now < fleet_wide[-1].t + timedelta(seconds=180)
    assert fleet_wide[-1].count >= len(current)
    assert sum(p.count for p in fleet_wide) == len(fleet) * 12 * 5 + len(current)
