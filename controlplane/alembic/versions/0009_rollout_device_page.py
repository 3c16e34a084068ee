"""An index for a rollout's device list: rollout_device (rollout_id, wave, device_id).

The dashboard's rollout page lists a rollout's devices by wave and id, 200 a page (keyset:
`after=WAVE:ID`); without this index every page sorted all the rollout's rows (10,000 in the
fleet bench), with it a page reads its 200 index entries.

Revision ID: 0009_rollout_device_page
Revises: 0008_rollout_progress
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009_rollout_device_page"
down_revision: str | Sequence[str] | None = "0008_rollout_progress"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the page index."""
    op.create_index("ix_rollout_device_page", "rollout_device", ["rollout_id", "wave", "device_id"])


def downgrade() -> None:
    """Drop it."""
    op.drop_index("ix_rollout_device_page", "rollout_device")
