"""Alembic owns the schema: the revisions build exactly what the table classes describe."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from sqlalchemy import create_engine, inspect

from controlplane.core.config import Settings
from controlplane.core.db import alembic_config, migrate


def test_migrations_match_the_models_and_run_twice(db_url: str) -> None:
    migrate(db_url)
    migrate(db_url)  # idempotent: startup and `edgefleet-cp migrate` both run it
    command.check(alembic_config(db_url))  # raises when models and revisions disagree
    engine = create_engine(db_url)
    try:
        assert {"device", "device_label", "api_token", "model_version"} <= set(
            inspect(engine).get_table_names()
        )
    finally:
        engine.dispose()


def test_downgrade_to_base_and_back(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    migrate(url)
    command.downgrade(alembic_config(url), "base")
    engine = create_engine(url)
    try:
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()
    migrate(url)


def test_settings_default_to_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.database_url == f"sqlite:///{tmp_path / 'controlplane.db'}"
    assert settings.broker_password_file == tmp_path / "mosquitto" / "passwd"
    pg = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    assert Settings(data_dir=tmp_path, database_url=pg).database_url == pg
