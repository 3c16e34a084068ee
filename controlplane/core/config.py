"""Control plane settings: one class, read from EDGEFLEET_CP_* environment variables."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MQTT_PORT = 1883
MQTTS_PORT = 8883


def parse_broker_url(url: str) -> tuple[str, int, bool]:
    """(host, port, tls) of `mqtt://host[:1883]` or `mqtts://host[:8883]`."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ValueError(f"broker URL {url!r} must look like mqtt://host:1883 or mqtts://host:8883")
    tls = parts.scheme == "mqtts"
    return parts.hostname, parts.port or (MQTTS_PORT if tls else MQTT_PORT), tls


def default_data_dir() -> Path:
    """~/.local/share/edgefleet-cp."""
    return Path.home() / ".local" / "share" / "edgefleet-cp"


def _under_data_dir(*parts: str) -> Callable[[dict[str, Any]], Path]:
    """A default path below the validated data_dir."""
    return lambda fields: Path(fields["data_dir"], *parts)


class Settings(BaseSettings):
    """Everything the control plane can be configured with."""

    model_config = SettingsConfigDict(env_prefix="EDGEFLEET_CP_", env_file=None, extra="ignore")

    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="where the database, signing key, artifacts and broker files live",
    )
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL; empty means sqlite:///<data_dir>/controlplane.db "
        "(PostgreSQL: postgresql+psycopg://user@host:5432/db)",
    )
    host: str = Field(default="127.0.0.1", description="address `serve` binds")
    port: int = Field(default=8080, description="port `serve` binds")
    public_url: str = Field(
        default="",
        description="base URL devices use to reach this API; empty means http://<host>:<port>",
    )
    auto_migrate: bool = Field(default=True, description="run Alembic migrations at startup")

    mqtt_host: str = Field(default="127.0.0.1", description="broker host devices connect to")
    mqtt_port: int = Field(
        default=1883, description="broker port devices connect to (the TLS listener: 8883)"
    )
    mqtt_tls: bool = Field(default=False, description="whether devices must use TLS")
    mqtt_ca_cert_file: Path = Field(
        default_factory=_under_data_dir("mqtt-tls", "ca.crt"),
        description="CA certificate devices get at enrollment to verify the broker (the "
        "operator's, or created by broker-config); default <data_dir>/mqtt-tls/ca.crt",
    )
    mqtt_ca_key_file: Path = Field(
        default_factory=_under_data_dir("mqtt-tls", "ca.key"),
        description="that CA's key, used by broker-config to sign the broker's certificate; "
        "default <data_dir>/mqtt-tls/ca.key",
    )
    mqtt_cp_username: str = Field(default="edgefleet-cp", description="control plane's MQTT user")
    mqtt_cp_password: SecretStr | None = Field(
        default=None,
        description="control plane's MQTT password; empty means generated into the data dir",
    )
    # --- MQTT bridge and telemetry (H7) ---
    mqtt_enabled: bool = Field(
        default=False,
        description="run the MQTT bridge (device state, telemetry, events) against mqtt_host",
    )
    ingest_process: bool = Field(
        default=False,
        description="run the MQTT bridge, its database writer and the rollout controller in "
        "a second process, so API requests never wait behind them for Python's GIL; `serve` "
        "turns it on unless this is set",
    )
    mqtt_cp_client_id: str = Field(
        default="",
        description="bridge MQTT client id; empty means edgefleet-cp-<hostname>-<suffix derived "
        "from the control plane's MQTT password>, stable and unguessable",
    )
    mqtt_cp_url: str = Field(
        default="",
        description="broker URL of the control plane's own connection (mqtt://127.0.0.1:1883, "
        "mqtts://broker:8883); empty means mqtt_host:mqtt_port, over TLS when mqtt_tls",
    )
    telemetry_raw_retention: timedelta = Field(
        default=timedelta(hours=48),
        description="how long raw telemetry samples are kept before hourly rollup",
    )
    telemetry_retention_interval: timedelta = Field(
        default=timedelta(minutes=10), description="how often the telemetry rollup runs"
    )
    broker_password_file: Path = Field(
        default_factory=_under_data_dir("mosquitto", "passwd"),
        description="Mosquitto password file; default <data_dir>/mosquitto/passwd",
    )
    broker_acl_file: Path = Field(
        default_factory=_under_data_dir("mosquitto", "acl"),
        description="Mosquitto ACL file; default <data_dir>/mosquitto/acl",
    )
    broker_pid_file: Path | None = Field(
        default=None, description="Mosquitto pid file, SIGHUPed after credentials change"
    )
    broker_pid: int | None = Field(default=None, description="Mosquitto pid (instead of a file)")

    signing_key_path: Path = Field(
        default_factory=_under_data_dir("signing.key"),
        description="Ed25519 manifest signing key; default <data_dir>/signing.key",
    )
    trusted_keys: list[str] = Field(
        default_factory=list,
        description="extra base64 Ed25519 public keys accepted at model import without --resign",
    )
    artifact_root: Path = Field(
        default_factory=_under_data_dir("artifacts"),
        description="artifact store root; default <data_dir>/artifacts",
    )
    enrollment_ttl_max: timedelta = Field(
        default=timedelta(days=30), description="longest lifetime of an enrollment token"
    )
    device_budget_scale: float = Field(
        default=1.0,
        ge=0,
        description="what the MQTT bridge accepts from one device, as a multiple of "
        "models.budget.DEVICE_BUDGET (5,000 messages and 4 MiB at once, then 5 messages "
        "and 16 KiB a second); past it messages are dropped unread and counted `throttled`. "
        "0 turns the budget off",
    )
    enroll_rate_per_minute: float = Field(
        default=30.0,
        ge=0,
        description="enrollments one client address may make a minute, after a burst of 20 "
        "(api/rate_limit.py); 0 turns the limit off",
    )
    model_upload_max_bytes: int = Field(
        default=64 * 2**30,
        gt=0,
        description="largest model file (.gguf, or a signed model directory as .tar.gz or "
        ".zip) the dashboard accepts as an upload; it is written to <data_dir>/uploads",
    )

    @field_validator("mqtt_cp_url")
    @classmethod
    def _check_cp_url(cls, url: str) -> str:
        if url:
            parse_broker_url(url)
        return url

    @field_validator("data_dir")
    @classmethod
    def _expand_data_dir(cls, path: Path) -> Path:
        return path.expanduser()

    @model_validator(mode="after")
    def _fill_urls(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'controlplane.db'}"
        if not self.public_url:
            self.public_url = f"http://{self.host}:{self.port}"
        self.public_url = self.public_url.rstrip("/")
        return self

    @property
    def bridge_address(self) -> tuple[str, int, bool]:
        """(host, port, tls) the control plane's own MQTT connection uses."""
        if self.mqtt_cp_url:
            return parse_broker_url(self.mqtt_cp_url)
        return self.mqtt_host, self.mqtt_port, self.mqtt_tls
