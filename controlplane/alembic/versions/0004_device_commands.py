"""Device commands: device_command (controlplane.command_models)."""

import sqlalchemy as sa
from alembic import op

revision = "0004_device_commands"
down_revision = "0001"
branch_labels = ("commands",)


def upgrade() -> None:
    """Create the device_command table."""
    op.create_table(
        "device_command",
        sa.Column("request_id", sa.String(32), primary_key=True),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("command", sa.String(32), nullable=False),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ok", sa.Boolean(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=False),
    )
    op.create_index("ix_device_command_device_id", "device_command", ["device_id"])


def downgrade() -> None:
    """Drop the device_command table."""
    op.drop_index("ix_device_command_device_id", table_name="device_command")
    op.drop_table("device_command")
