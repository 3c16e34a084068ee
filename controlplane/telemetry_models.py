"""Telemetry tables (raw samples, per-minute and hourly aggregates) and the query API's schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import BigInteger, DateTime, Index, text
from sqlmodel import Field, SQLModel

from controlplane.db_models import UtcDateTime

# Every numeric field of models.protocol.TelemetrySample; the query API's `metric` values.
METRICS: tuple[str, ...] = (
    "tokens_per_s",
    "ttft_ms",
    "requests",
    "queue_depth",
    "errors",
    "cpu_percent",
    "mem_used_bytes",
    "temperature_c",
    "power_w",
)


class TelemetrySample(SQLModel, table=True):
    """One raw sample; (device, ts, seq, idx) makes a resent batch a no-op."""

    __tablename__ = "telemetry_sample"
    # Samples with errors, for "which devices reported errors lately": alembic 0010. The
    # query says `errors > 0` with a literal 0 (telemetry_summary.erring_devices), or the
    # planner cannot use this partial index.
    __table_args__ = (
        Index("ix_telemetry_sample_ts", "ts"),
        Index(
            "ix_telemetry_sample_errors",
            "ts",
            "device_id",
            sqlite_where=text("errors > 0"),
            postgresql_where=text("errors > 0"),
        ),
    )

    device_id: str = Field(
        foreign_key="device.id", primary_key=True, max_length=64, ondelete="CASCADE"
    )
    ts: datetime = Field(primary_key=True, sa_type=DateTime(timezone=True))
    seq: int = Field(primary_key=True, sa_type=BigInteger)
    idx: int = Field(primary_key=True, description="position of the sample in its batch")
    tokens_per_s: float | None = None
    ttft_ms: float | None = None
    requests: int = 0
    queue_depth: int = 0
    errors: int = 0
    cpu_percent: float | None = None
    mem_used_bytes: int | None = Field(default=None, sa_type=BigInteger)
    temperature_c: float | None = None
    power_w: float | None = None


class TelemetryHourly(SQLModel, table=True):
    """One metric of one device over one hour, kept after the raw samples are gone."""

    __tablename__ = "telemetry_hourly"
    __table_args__ = (Index("ix_telemetry_hourly_hour", "hour"),)

    device_id: str = Field(
        foreign_key="device.id", primary_key=True, max_length=64, ondelete="CASCADE"
    )
    metric: str = Field(primary_key=True, max_length=32)
    hour: datetime = Field(primary_key=True, sa_type=DateTime(timezone=True))
    count: int = Field(sa_type=BigInteger)
    sum: float
    min: float
    max: float


# The per-minute table's columns for each metric: `{metric}_count`, `_sum`, `_min`, `_max`.
MINUTE_AGGREGATES: tuple[str, ...] = ("count", "sum", "min", "max")


def minute_columns(metric: str) -> tuple[str, str, str, str]:
    """The per-minute table's count, sum, min and max columns of `metric`."""
    count, total, low, high = (f"{metric}_{agg}" for agg in MINUTE_AGGREGATES)
    return count, total, low, high


def _minute_table() -> sa.Table:
    columns: list[sa.Column[Any]] = [
        sa.Column("minute", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("device_class", sa.String(100), primary_key=True),
        sa.Column("model", sa.String(300), primary_key=True),
    ]
    for metric in METRICS:
        count, total, low, high = minute_columns(metric)
        columns += [
            sa.Column(count, sa.BigInteger(), nullable=False),
            sa.Column(total, sa.Float(), nullable=False),
            sa.Column(low, sa.Float(), nullable=True),
            sa.Column(high, sa.Float(), nullable=True),
        ]
    return sa.Table("telemetry_minute", SQLModel.metadata, *columns)


TELEMETRY_MINUTE = _minute_table()
"""Samples per minute, device class and model (the device's when the sample was written),
count/sum/min/max of every metric: upserted with the samples, in their transaction, and
pruned with them by the rollup. Fleet-wide charts read it instead of every sample."""


class IngestCounter(SQLModel, table=True):
    """Messages the bridge dropped, by device and reason; survives restarts."""

    __tablename__ = "ingest_counter"

    device_id: str = Field(
        primary_key=True, max_length=64, description="empty for counts of no one device"
    )
    counter: str = Field(primary_key=True, max_length=32)
    count: int = Field(default=0, sa_type=BigInteger)
    last_at: datetime = Field(sa_type=DateTime(timezone=True))


class TelemetryPoint(SQLModel):
    """One bucket of a series: `t` is the bucket start."""

    t: UtcDateTime
    count: int
    avg: float | None
    min: float | None
    max: float | None
    sum: float | None


class TelemetrySeries(SQLModel):
    """A metric over a time range, bucketed; `device_id` is None for fleet-wide series."""

    device_id: str | None
    metric: str
    start: UtcDateTime
    end: UtcDateTime
    bucket_s: int
    points: list[TelemetryPoint]


class FleetSummary(SQLModel):
    """Device counts by what operators filter on."""

    total: int
    online: int
    by_class: dict[str, int]
    by_engine: dict[str, int]
    by_model: dict[str, int]
    by_health: dict[str, int]
    by_agent_version: dict[str, int]
