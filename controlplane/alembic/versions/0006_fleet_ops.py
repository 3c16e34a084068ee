"""Fleet operations: soak after activation, agent releases, remote agent settings.

rollout.kind says what a rollout carries (`model` or `agent`); rollout_device.activated_at
starts a device's soak window; device_desired carries the desired agent release and agent
settings besides its models.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_fleet_ops"
down_revision = "0003_rollouts"


def upgrade() -> None:
    """Add the soak, agent release and settings columns (existing rows: model, none)."""
    with op.batch_alter_table("rollout") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="model"))
    with op.batch_alter_table("rollout_device") as batch:
        batch.add_column(sa.Column("activated_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("device_desired") as batch:
        batch.add_column(sa.Column("agent", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("settings", sa.JSON(), nullable=True))


def downgrade() -> None:
    """Drop the columns again."""
    with op.batch_alter_table("device_desired") as batch:
        batch.drop_column("settings")
        batch.drop_column("agent")
    with op.batch_alter_table("rollout_device") as batch:
        batch.drop_column("activated_at")
    with op.batch_alter_table("rollout") as batch:
        batch.drop_column("kind")
