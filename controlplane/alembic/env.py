"""Alembic environment: the URL comes from the caller's Config (see controlplane.core.db)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool
from sqlmodel import SQLModel

import controlplane.audit.models  # noqa: F401  (audit log)
import controlplane.command_models  # noqa: F401  (device commands)
import controlplane.db_models  # noqa: F401  (registers the core tables)
import controlplane.rollouts.models  # noqa: F401  (rollout tables)
import controlplane.telemetry_models  # noqa: F401  (telemetry tables, H7)

# Every module that defines tables is imported above, so `revision --autogenerate` and
# `alembic check` see the whole schema; the revisions themselves are explicit.

config = context.config
target_metadata = SQLModel.metadata


def run_migrations_offline() -> None:
    """Emit SQL without a connection (`alembic upgrade --sql`)."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Migrate over a live connection; batch mode lets SQLite alter tables."""
    connectable = config.attributes.get("connection")
    if connectable is None:
        connectable = engine_from_config(
            config.get_section(config.config_ini_section, {}),
            prefix="sqlalchemy.",
            poolclass=pool.NullPool,
        )
    with connectable.connect() as connection:
        context.configure(
            connection=connection, target_metadata=target_metadata, render_as_batch=True
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
