"""A partial index of the samples that report errors: telemetry_sample (ts, device_id) WHERE
errors > 0.

The fleet counts (overview, live fleet stream, /api/v1/fleet/summary) ask which devices
reported errors in the last 15 minutes; without this index that read every sample of those
15 minutes (60,000 in the 10,000-device bench: 137 ms on SQLite), with it only the erring
ones. Samples without errors, nearly all of them, do not enter the index, so ingest pays
nothing for them.
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_telemetry_errors"
down_revision = "0002_telemetry"


def upgrade() -> None:
    """Create the partial index."""
    erring = sa.text("errors > 0")
    op.create_index(
        "ix_telemetry_sample_errors",
        "telemetry_sample",
        ["ts", "device_id"],
        sqlite_where=erring,
        postgresql_where=erring,
    )


def downgrade() -> None:
    """Drop it."""
    op.drop_index("ix_telemetry_sample_errors", "telemetry_sample")
