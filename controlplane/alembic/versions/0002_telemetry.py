"""Telemetry: raw samples and hourly aggregates (owned by controlplane.telemetry_store)."""

import sqlalchemy as sa
from alembic import op

revision = "0002_telemetry"
down_revision = "0001"


def _device_fk() -> sa.ForeignKey:
    return sa.ForeignKey("device.id", ondelete="CASCADE")


def upgrade() -> None:
    """Create telemetry_sample and telemetry_hourly."""
    op.create_table(
        "telemetry_sample",
        sa.Column("device_id", sa.String(64), _device_fk(), primary_key=True),
        sa.Column("ts", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("idx", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("tokens_per_s", sa.Float(), nullable=True),
        sa.Column("ttft_ms", sa.Float(), nullable=True),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("queue_depth", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("cpu_percent", sa.Float(), nullable=True),
        sa.Column("mem_used_bytes", sa.BigInteger(), nullable=True),
        sa.Column("temperature_c", sa.Float(), nullable=True),
        sa.Column("power_w", sa.Float(), nullable=True),
    )
    op.create_index("ix_telemetry_sample_ts", "telemetry_sample", ["ts"])
    op.create_table(
        "telemetry_hourly",
        sa.Column("device_id", sa.String(64), _device_fk(), primary_key=True),
        sa.Column("metric", sa.String(32), primary_key=True),
        sa.Column("hour", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("sum", sa.Float(), nullable=False),
        sa.Column("min", sa.Float(), nullable=False),
        sa.Column("max", sa.Float(), nullable=False),
    )
    op.create_index("ix_telemetry_hourly_hour", "telemetry_hourly", ["hour"])


def downgrade() -> None:
    """Drop the telemetry tables."""
    op.drop_table("telemetry_hourly")
    op.drop_table("telemetry_sample")
