"""Ingest drop counters (ingest_counter) and operator token expiry (api_token.expires_at)."""

import sqlalchemy as sa
from alembic import op

revision = "0005_ingest_counters"
down_revision = "0001"
branch_labels = ("hardening",)


def upgrade() -> None:
    """Create ingest_counter; tokens get an optional expiry (existing ones never expire)."""
    op.create_table(
        "ingest_counter",
        sa.Column("device_id", sa.String(64), primary_key=True),
        sa.Column("counter", sa.String(32), primary_key=True),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("api_token") as batch:
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    """Drop ingest_counter and the token expiry."""
    with op.batch_alter_table("api_token") as batch:
        batch.drop_column("expires_at")
    op.drop_table("ingest_counter")
