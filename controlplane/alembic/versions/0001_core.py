"""Core tables: operator tokens, enrollment tokens, devices and labels, models."""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def _tz() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create the core tables."""
    op.create_table(
        "api_token",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", _tz(), nullable=False),
        sa.Column("revoked_at", _tz(), nullable=True),
    )
    op.create_index("ix_api_token_token_hash", "api_token", ["token_hash"], unique=True)

    op.create_table(
        "enrollment_token",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_by", sa.String(), nullable=False),
        sa.Column("created_at", _tz(), nullable=False),
        sa.Column("expires_at", _tz(), nullable=False),
        sa.Column("used_at", _tz(), nullable=True),
        sa.Column("device_id", sa.String(), nullable=True),
    )
    op.create_index(
        "ix_enrollment_token_token_hash", "enrollment_token", ["token_hash"], unique=True
    )

    op.create_table(
        "device",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("device_class", sa.String(100), nullable=False),
        sa.Column("agent_version", sa.String(100), nullable=False),
        sa.Column("hardware", sa.JSON(), nullable=False),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("online", sa.Boolean(), nullable=False),
        sa.Column("last_seen", _tz(), nullable=True),
        sa.Column("active_model", sa.String(300), nullable=True),
        sa.Column("mqtt_password_hash", sa.String(300), nullable=False),
        sa.Column("artifact_token_hash", sa.String(64), nullable=False),
        sa.Column("enrolled_at", _tz(), nullable=False),
        sa.Column("revoked_at", _tz(), nullable=True),
    )
    op.create_index("ix_device_active_model", "device", ["active_model"])
    op.create_index("ix_device_artifact_token_hash", "device", ["artifact_token_hash"], unique=True)
    op.create_index("ix_device_device_class", "device", ["device_class"])
    op.create_index("ix_device_online", "device", ["online"])

    op.create_table(
        "device_label",
        sa.Column(
            "device_id",
            sa.String(64),
            sa.ForeignKey("device.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("key", sa.String(63), primary_key=True),
        sa.Column("value", sa.String(63), nullable=False),
    )
    op.create_index("ix_device_label_value", "device_label", ["value"])

    op.create_table(
        "model",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", _tz(), nullable=False),
    )
    op.create_index("ix_model_name", "model", ["name"], unique=True)

    op.create_table(
        "model_version",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "model_id", sa.Integer(), sa.ForeignKey("model.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("version", sa.String(100), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("manifest_json", sa.Text(), nullable=False),
        sa.Column("signature_json", sa.Text(), nullable=False),
        sa.Column("created_at", _tz(), nullable=False),
        sa.UniqueConstraint("model_id", "version"),
    )
    op.create_index("ix_model_version_model_id", "model_version", ["model_id"])


def downgrade() -> None:
    """Drop the core tables."""
    for table in (
        "model_version",
        "model",
        "device_label",
        "device",
        "enrollment_token",
        "api_token",
    ):
        op.drop_table(table)
