"""The agent's settings: one declaration read from flags, EDGEFLEET_AGENT_* variables and a file."""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from agent.engines.base import LoadOptions
from agent.errors import AgentError

_LOGGER = logging.getLogger(__name__)

ENV_PREFIX = "EDGEFLEET_AGENT_"
CONFIG_ENV = "EDGEFLEET_AGENT_CONFIG"
DEFAULT_CONFIG_FILES = (Path("/etc/edgefleet/agent.toml"), Path("/etc/edgefleet/agent.json"))
_config_file: contextvars.ContextVar[Path | None] = contextvars.ContextVar(
    "edgefleet_agent_config", default=None
)


class ConfigError(AgentError):
    """The configuration file cannot be read or has a wrong value."""


def default_data_dir() -> Path:
    """$STATE_DIRECTORY (systemd), /var/lib/edgefleet for root, else ~/.local/share/edgefleet."""
    state = os.environ.get("STATE_DIRECTORY")
    if state:
        return Path(state.split(":")[0])
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/edgefleet")
    return Path.home() / ".local" / "share" / "edgefleet"


class AgentSettings(BaseSettings):
    """Settings of the agent; each field is a flag, an EDGEFLEET_AGENT_<NAME> variable and a key."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    host: str = Field(default="127.0.0.1", description="address the REST API binds")
    port: int = Field(default=11435, ge=0, le=65535, description="TCP port of the REST API")
    api_key: str | None = Field(
        default=None,
        description="require 'Authorization: Bearer KEY' (set it when not on localhost)",
    )
    model_path: Path | None = Field(
        default=None, description="model directory (with manifest.json) or .gguf file to serve"
    )
    engine: str | None = Field(default=None, description="force an engine (e.g. llamacpp)")
    data_dir: Path = Field(
        default_factory=default_data_dir, description="where models, slots and state are kept"
    )
    queue_depth: int = Field(default=16, ge=0, description="requests that may wait; more get 503")
    keep_alive: str = Field(
        default="-1", description="unload an idle model after this long ('5m', '1h', 0, -1 = never)"
    )
    threads: int | None = Field(default=None, ge=1, description="CPU threads for the engine")
    parallel: int = Field(
        default=0,
        ge=0,
        le=64,
        description="sequences a batching engine (llama.cpp) serves at once, each with the full "
        "context; 0 = as many as free memory allows, up to 8",
    )
    context_length: int | None = Field(
        default=None, ge=1, description="context tokens for a bare .gguf (default 2048)"
    )
    control_plane_url: str | None = Field(default=None, description="control plane base URL")
    enrollment_token: str | None = Field(default=None, description="one-time enrollment token")
    mqtt_url: str | None = Field(default=None, description="MQTT broker URL (mqtt[s]://host:port)")
    batch_invariant: bool = Field(
        default=True,
        description="CPU math under which a greedy answer is the same alone or batched "
        "(OpenVINO: f32, no dynamic activation quantization: about 2x the CPU per token at 8 "
        "streams); false: the engine's fastest CPU defaults (bf16 where the CPU has it)",
    )
    benchmark_engines: bool = Field(
        default=False,
        description="time the candidate engines of a model directory once and keep the fastest "
        "(cached in DATA_DIR/engine-benchmarks.json; not for fleet rollouts)",
    )
    max_body_bytes: int = Field(
        default=8 << 20, ge=1, description="largest request body the REST API reads (else 413)"
    )
    max_prompt_chars: int = Field(
        default=1_000_000, ge=1, description="longest prompt, in characters, taken for tokenizing"
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="web page origins (e.g. http://localhost:3000, or *) allowed to call the "
        "REST API from a browser; others get 403 on POST",
    )
    allow_insecure_pull: bool = Field(
        default=False,
        description="let Ollama's /api/pull take a .gguf path or URL without #sha256=<hex> "
        "when the request also sets insecure: true (the file is then not verified)",
    )
    log_level: str = Field(default="info", description="debug, info, warning or error")

    def load_options(self) -> LoadOptions:
        """What an engine load takes from the settings (context of a bare .gguf, threads,
        cache, parallel, CPU math); the model, its variant and the hardware give the rest."""
        return LoadOptions(
            context_length=self.context_length or LoadOptions.context_length,
            threads=self.threads,
            cache_dir=self.data_dir / "cache",
            parallel=self.parallel,
            batch_invariant=self.batch_invariant,
        )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flags beat environment variables, which beat the config file."""
        return init_settings, env_settings, _ConfigFileSource(settings_cls)


def config_file_path() -> Path | None:
    """The config file in effect: --config, $EDGEFLEET_AGENT_CONFIG or the first default found."""
    explicit = _config_file.get() or os.environ.get(CONFIG_ENV)
    if explicit:
        return Path(explicit)
    return next((p for p in DEFAULT_CONFIG_FILES if p.is_file()), None)


def read_config_file(path: Path) -> dict[str, Any]:
    """The key/value table of a .toml or .json config file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            data = _parse_toml(text)
    except ValueError as exc:
        raise ConfigError(f"config file {path} is not valid {path.suffix[1:]}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a table of settings")
    return data


def _parse_toml(text: str) -> Any:
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib.loads(text)
    import tomli  # type: ignore[import-not-found,unused-ignore]  # Python 3.10

    return tomli.loads(text)


class _ConfigFileSource(PydanticBaseSettingsSource):
    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = config_file_path()
        if path is None:
            return {}
        data = read_config_file(path)
        known = set(self.settings_cls.model_fields)
        for key in sorted(set(data) - known):
            _LOGGER.warning("config file %s: unknown setting %r ignored", path, key)
        return {k: v for k, v in data.items() if k in known}


def load_settings(config_file: Path | None = None, **overrides: Any) -> AgentSettings:
    """Settings from the config file, the environment and explicit overrides (None skipped)."""
    token = _config_file.set(config_file)
    try:
        if config_file is not None and not config_file.is_file():
            raise ConfigError(f"config file {config_file} does not exist")
        return AgentSettings(**{k: v for k, v in overrides.items() if v is not None})
    finally:
        _config_file.reset(token)
