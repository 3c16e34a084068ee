"""Rollouts: rollout, rollout_device, device_desired, rollout_lease (controlplane.rollouts)."""

import sqlalchemy as sa
from alembic import op

revision = "0003_rollouts"
down_revision = "0001"
branch_labels = ("rollouts",)


def _tz() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create the rollout tables."""
    op.create_table(
        "rollout",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("model_version", sa.String(100), nullable=False),
        sa.Column("manifest_url", sa.Text(), nullable=False),
        sa.Column("selector", sa.JSON(), nullable=False),
        sa.Column("strategy", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("current_wave", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("created_at", _tz(), nullable=False),
        sa.Column("started_at", _tz(), nullable=True),
        sa.Column("finished_at", _tz(), nullable=True),
    )
    op.create_index("ix_rollout_model_name", "rollout", ["model_name"])
    op.create_index("ix_rollout_status", "rollout", ["status"])
    op.create_table(
        "rollout_device",
        sa.Column(
            "rollout_id",
            sa.String(32),
            sa.ForeignKey("rollout.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("device_id", sa.String(64), primary_key=True),
        sa.Column("wave", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("sub_status", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("desired_version", sa.Integer(), nullable=True),
        sa.Column("previous_models", sa.JSON(), nullable=False),
        sa.Column("dispatched_at", _tz(), nullable=True),
        sa.Column("updated_at", _tz(), nullable=False),
    )
    op.create_index("ix_rollout_device_device_id", "rollout_device", ["device_id"])
    op.create_index("ix_rollout_device_state", "rollout_device", ["state"])
    op.create_table(
        "device_desired",
        sa.Column("device_id", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("models", sa.JSON(), nullable=False),
        sa.Column("published_version", sa.Integer(), nullable=False),
        sa.Column("updated_at", _tz(), nullable=False),
    )
    op.create_table(
        "rollout_lease",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("holder", sa.String(100), nullable=False),
        sa.Column("expires_at", _tz(), nullable=False),
    )


def downgrade() -> None:
    """Drop the rollout tables."""
    op.drop_table("rollout_lease")
    op.drop_table("device_desired")
    op.drop_index("ix_rollout_device_state", "rollout_device")
    op.drop_index("ix_rollout_device_device_id", "rollout_device")
    op.drop_table("rollout_device")
    op.drop_index("ix_rollout_status", "rollout")
    op.drop_index("ix_rollout_model_name", "rollout")
    op.drop_table("rollout")
