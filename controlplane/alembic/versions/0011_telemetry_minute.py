"""Per-minute telemetry by device class and model: telemetry_minute.

The overview's fleet-wide chart and the /fleet charts added up every raw sample of their
window on each request (60,000 in the 10,000-device bench). The ingest writer now also
upserts count/sum/min/max of every metric per (minute, device class, model) in the samples'
transaction, and the charts read those rows: minutes x groups, not samples.
"""

import sqlalchemy as sa
from alembic import op

revision = "0011_telemetry_minute"
down_revision = "0010_telemetry_errors"

# The metrics as of this revision (controlplane.telemetry_models.METRICS may grow later).
_METRICS = (
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


def upgrade() -> None:
    """Create telemetry_minute and fill it from the raw samples already stored (grouped by
    each device's current class and model: which one it ran then is not recorded)."""
    columns: list[sa.Column[object]] = [
        sa.Column("minute", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("device_class", sa.String(100), primary_key=True),
        sa.Column("model", sa.String(300), primary_key=True),
    ]
    for metric in _METRICS:
        columns += [
            sa.Column(f"{metric}_count", sa.BigInteger(), nullable=False),
            sa.Column(f"{metric}_sum", sa.Float(), nullable=False),
            sa.Column(f"{metric}_min", sa.Float(), nullable=True),
            sa.Column(f"{metric}_max", sa.Float(), nullable=True),
        ]
    op.create_table("telemetry_minute", *columns)
    if op.get_bind().dialect.name == "sqlite":  # SQLAlchemy's stored form of a naive UTC time
        minute = "strftime('%Y-%m-%d %H:%M:00.000000', s.ts)"
    else:
        minute = "date_trunc('minute', s.ts)"
    names = ["minute", "device_class", "model"]
    values = [minute, "COALESCE(d.device_class, '')", "COALESCE(d.active_model, '')"]
    for metric in _METRICS:
        names += [f"{metric}_{agg}" for agg in ("count", "sum", "min", "max")]
        values += [
            f"count(s.{metric})",
            f"COALESCE(sum(s.{metric}), 0)",
            f"min(s.{metric})",
            f"max(s.{metric})",
        ]
    op.execute(
        f"INSERT INTO telemetry_minute ({', '.join(names)}) SELECT {', '.join(values)} "
        "FROM telemetry_sample s JOIN device d ON d.id = s.device_id GROUP BY 1, 2, 3"
    )


def downgrade() -> None:
    """Drop it."""
    op.drop_table("telemetry_minute")
