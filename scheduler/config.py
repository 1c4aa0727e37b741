"""Service settings: `config/scheduler.toml`, overridden by `SCHEDULER_<SECTION>__<KEY>` variables.

Relative paths are relative to the config file's directory, so the service behaves the same
whatever directory it is started from.
"""

from __future__ import annotations

import os
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from scheduler.durations import Duration
from scheduler.errors import ConfigError

DEFAULT_CONFIG = Path("config/scheduler.toml")
TASK_QUEUE = "primary-workflow-task-queue"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TemporalSettings(_Section):
    address: str = ""
    """Empty: use the embedded dev server that `scheduler up` starts."""
    namespace: str = "default"
    task_queue: str = TASK_QUEUE
    api_key: str = ""
    tls: bool = False


class DevServerSettings(_Section):
    port: int = Field(7233, ge=1, le=65535)
    ui_port: int = Field(8233, ge=1, le=65535)
    db_file: Path = Path(".scheduler/temporal.db")


class ApiSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8081, ge=1, le=65535)


class CampaignsSettings(_Section):
    dir: Path = Path("campaigns")
    reconcile_every: Duration = timedelta(seconds=30)
    default: str = "abandoned-cart"


class WebhooksSettings(_Section):
    secret: str = ""
    twilio_auth_token: str = ""
    public_url: str = ""


class ChannelsSettings(_Section):
    default: str = "console"
    outbox: Path = Path(".scheduler/outbox.jsonl")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SCHEDULER_", env_nested_delimiter="__", extra="forbid")

    temporal: TemporalSettings = TemporalSettings()
    dev_server: DevServerSettings = DevServerSettings()
    api: ApiSettings = ApiSettings()
    campaigns: CampaignsSettings = CampaignsSettings()
    webhooks: WebhooksSettings = WebhooksSettings()
    channels: ChannelsSettings = ChannelsSettings()
    source: Path | None = Field(default=None, exclude=True)
    """The config file these settings came from (None: built-in defaults)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment wins over the file, which is passed in as init arguments.
        return (env_settings, init_settings)

    @property
    def temporal_address(self) -> str:
        """Where clients connect: the configured cluster, or the embedded dev server."""
        return self.temporal.address or f"127.0.0.1:{self.dev_server.port}"

    @property
    def embedded(self) -> bool:
        return not self.temporal.address


def load_settings(path: str | Path | None = None) -> Settings:
    """Read the config file (explicit path, `SCHEDULER_CONFIG`, or the default) and the environment.

    Raises:
        ConfigError: the file is missing (when named explicitly), not TOML, or has bad keys/values.
    """
    explicit = path is not None or "SCHEDULER_CONFIG" in os.environ
    file = Path(path if path is not None else os.environ.get("SCHEDULER_CONFIG", DEFAULT_CONFIG))
    data: dict[str, Any] = {}
    if file.is_file():
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: invalid TOML: {exc}") from None
    elif explicit:
        raise ConfigError(f"config file {str(file)!r} does not exist")
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise ConfigError("\n".join(_where(file, e) for e in exc.errors())) from None
    base = file.parent.resolve() if file.is_file() else Path.cwd()
    settings.source = file.resolve() if file.is_file() else None
    settings.dev_server.db_file = (base / settings.dev_server.db_file).resolve()
    settings.campaigns.dir = (base / settings.campaigns.dir).resolve()
    settings.channels.outbox = (base / settings.channels.outbox).resolve()
    return settings


def _where(file: Path, error: Any) -> str:
    """Blame the environment variable when one set the bad value, else the file."""
    loc = [str(p) for p in error["loc"]]
    env = "SCHEDULER_" + "__".join(p.upper() for p in loc)
    source = env if env in os.environ else str(file)
    return f"{source}: {'.'.join(loc)}: {error['msg']}"


def config_hint(settings: Settings, key: str) -> str:
    """How a user changes `key` ("api.port"): in their config file or by environment."""
    section, name = key.split(".")
    env = f"SCHEDULER_{section.upper()}__{name.upper()}"
    where = f"in {settings.source}" if settings.source else "in the config file"
    return f"set {key} {where} or {env}"
