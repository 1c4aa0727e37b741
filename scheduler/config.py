"""Service settings: `config/scheduler.toml`, overridden by `SCHEDULER_<SECTION>__<KEY>` variables.

Relative paths are relative to the config file's directory, so the service behaves the same
whatever directory it is started from.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from scheduler.errors import ConfigError
from scheduler.flow.durations import Duration, format_duration
from scheduler.flow.nodes.send_message import ChannelName
from scheduler.flow.nodes.wait_answer import SERVICE_HELP_KEYWORDS, SERVICE_OPT_IN_KEYWORDS, SERVICE_OPT_OUT_KEYWORDS
from scheduler.flow.quiet_hours import parse_quiet_hours
from scheduler.signatures import webhook_key

DEFAULT_CONFIG = Path("config/scheduler.toml")
TASK_QUEUE = "primary-workflow-task-queue"
ENV_PREFIX = "SCHEDULER_"
ENV_NESTED_DELIMITER = "__"


def env_var(key: str) -> str:
    """The environment variable that overrides config `key`: "channels.http.url" → SCHEDULER_CHANNELS__HTTP__URL."""
    return ENV_PREFIX + ENV_NESTED_DELIMITER.join(key.upper().split("."))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TemporalSettings(_Section):
    address: str = ""
    """Empty: use the embedded dev server that `scheduler up` starts."""
    namespace: str = "default"
    task_queue: str = TASK_QUEUE
    api_key: str = ""
    tls: bool = False
    ui_url: str = ""
    """The Temporal web UI the dashboard links to, e.g. `https://temporal.example.com`; empty: the embedded dev
    server's (`dev_server.ui_port`) when `address` is empty, else no links."""


class DevServerSettings(_Section):
    port: int = Field(7233, ge=1, le=65535)
    ui_port: int = Field(8233, ge=1, le=65535)
    db_file: Path = Path(".scheduler/temporal.db")


class ApiSettings(_Section):
    host: str = "127.0.0.1"
    """Any address but a loopback one needs an API key (`scheduler keys create`) before `up` or `api` start."""
    port: int = Field(8081, ge=1, le=65535)
    metrics_need_key: bool = False
    """True: `GET /metrics` needs a `read` key like the other `GET` routes (false: open, for a scraper)."""
    allowed_hosts: list[str] = []
    """Names the API answers to besides loopback ones, `api.host` and `webhooks.public_url`'s host (the `Host`
    header, port aside); another name is refused (400), so a DNS-rebinding page cannot reach it. `"*"`: any."""

    @field_validator("allowed_hosts")
    @classmethod
    def _host_names(cls, v: list[str]) -> list[str]:
        names = [h.strip().lower().rstrip(".") for h in v]
        if bad := [h for h in names if not h or any(c in h for c in "/:@ ")]:
            raise ValueError(f"a host name without scheme, port or path, such as 'api.example.com': got {bad[0]!r}")
        return names

    @property
    def on_loopback(self) -> bool:
        """Only this machine can reach the API ("localhost", 127.0.0.0/8, ::1)."""
        if self.host.lower() == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host.strip("[]")).is_loopback
        except ValueError:  # another host name: assume it is reachable from elsewhere
            return False


class CampaignsSettings(_Section):
    dir: Path = Path("campaigns")
    reconcile_every: Duration = timedelta(seconds=30)
    default: str = "abandoned-cart"


class StoreSettings(_Section):
    url: str = ""
    """A SQLAlchemy URL (`postgresql+psycopg://…` for a cluster); empty: SQLite `scheduler.db` beside the
    dev server's `db_file`."""

    @field_validator("url")
    @classmethod
    def _known_database(cls, v: str) -> str:
        if v and not v.startswith(("sqlite", "postgresql")):
            raise ValueError(f"{v.split(':', 1)[0]!r}: the store runs on SQLite or PostgreSQL (postgresql+psycopg://…)")
        return v


UNDELIVERABLE_CODES = ("30005", "30006")
"""Twilio's codes for a number no message will reach: 30005 unknown or inactive number, 30006 landline or unreachable
carrier. 30003 (unreachable handset) is left out: Twilio says it is often temporary (a phone switched off)."""
MAX_WINDOW = timedelta(days=366)
"""The longest `per` of a cap: a year, so the ledger never keeps a contact's sends for longer."""


class FrequencyCap(BaseModel):
    """At most `max` messages to one contact over `channels` in any window of `per`, all campaigns together."""

    model_config = ConfigDict(extra="forbid")

    channels: list[ChannelName]
    """The channels the cap counts and limits together, e.g. `["http"]` for SMS."""
    max: int
    """Messages allowed in a window."""
    per: Duration
    """The sliding window, e.g. "24h"."""

    @field_validator("channels")
    @classmethod
    def _some_channel(cls, v: list[ChannelName]) -> list[ChannelName]:
        if not v:
            raise ValueError("name at least one channel the cap counts: 'console', 'http', 'smtp' or 'twilio'")
        return list(dict.fromkeys(v))

    @field_validator("max")
    @classmethod
    def _at_least_one(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"at least 1 message per window, got {v}")
        return v

    @field_validator("per")
    @classmethod
    def _window(cls, v: timedelta) -> timedelta:
        if v <= timedelta(0):
            raise ValueError("the window must be longer than 0s, e.g. '24h'")
        if v > MAX_WINDOW:
            raise ValueError(f"the window is at most {format_duration(MAX_WINDOW)}, got {format_duration(v)!r}")
        return v


class ComplianceSettings(_Section):
    """Consent keywords: a reply that is exactly one of them (trimmed, any case) changes consent."""

    opt_out_keywords: list[str] = list(SERVICE_OPT_OUT_KEYWORDS)
    opt_in_keywords: list[str] = list(SERVICE_OPT_IN_KEYWORDS)
    help_keywords: list[str] = list(SERVICE_HELP_KEYWORDS)
    stop_confirmation: str = Field("", max_length=1600)
    """Sent once per opt-out (empty: none, e.g. when the SMS provider confirms itself, as Twilio does)."""
    start_confirmation: str = Field("", max_length=1600)
    help_reply: str = Field("", max_length=1600)
    unsubscribe_secret: str = ""
    """HMAC key of the one-click unsubscribe links in e-mail (`List-Unsubscribe`); needs `webhooks.public_url`."""
    unsubscribe_mailto: str = ""
    """An address that also unsubscribes (a second `List-Unsubscribe` URI), e.g. `unsubscribe@shop.example`."""
    quiet_hours: str = ""
    """`HH:MM-HH:MM` in each customer's local time: customer messages due then are held until it ends
    (empty: none). A campaign's `[delivery] quiet_hours` overrides it."""
    frequency_caps: list[FrequencyCap] = []
    """Every rule must hold for a customer message to go (`[delivery] frequency_capped = false` exempts a campaign)."""
    undeliverable_codes: list[str] = list(UNDELIVERABLE_CODES)
    """A gateway's error codes (Twilio's `ErrorCode`) that mean the number will never take a message: a final
    receipt with one suppresses the contact (reason `undeliverable <code>`); a later opt-in lifts it."""

    @field_validator("undeliverable_codes")
    @classmethod
    def _codes(cls, v: list[str]) -> list[str]:
        codes = [c.strip() for c in v]
        if bad := [c for c in codes if not c or len(c) > 32 or not c.isprintable()]:
            raise ValueError(f"an error code such as '30006' (at most 32 characters): got {bad[0]!r}")
        return list(dict.fromkeys(codes))

    @field_validator("unsubscribe_secret")
    @classmethod
    def _strong_secret(cls, v: str) -> str:
        """Empty: no links. Else at least 32 characters with at least 10 different ones: a short or repetitive key
        is found from a single link in moments, and then anyone can forge links that unsubscribe anyone."""
        if v and (len(v) < 32 or len(set(v)) < 10):
            raise ValueError(
                f"too weak to sign unsubscribe links ({len(v)} characters, {len(set(v))} different): it needs at"
                f" least 32 characters with at least 10 different ones; make one with"
                f" python -c 'import secrets;print(secrets.token_urlsafe(32))' and set it in"
                f" compliance.unsubscribe_secret or {env_var('compliance.unsubscribe_secret')}"
            )
        return v

    @field_validator("quiet_hours")
    @classmethod
    def _window(cls, v: str) -> str:
        parse_quiet_hours(v)
        return v

    @field_validator("opt_out_keywords", "opt_in_keywords", "help_keywords")
    @classmethod
    def _words(cls, v: list[str]) -> list[str]:
        words = [w.strip().upper() for w in v]
        if bad := [w for w in words if not w or " " in w]:
            raise ValueError(f"a keyword is one word: {bad[0]!r}")
        return words

    @model_validator(mode="after")
    def _disjoint(self) -> ComplianceSettings:
        lists = (self.opt_out_keywords, self.opt_in_keywords, self.help_keywords)
        seen: set[str] = set()
        for words in lists:
            if twice := seen.intersection(words):
                raise ValueError(f"keyword {sorted(twice)[0]!r} is in two of the keyword lists")
            seen.update(words)
        return self


class WebhooksSettings(_Section):
    secret: str = ""
    """Standard Webhooks secret (`whsec_…`); set: `/webhooks/replies` requires signed requests."""
    twilio_auth_token: str = ""
    """Set: `/webhooks/twilio` requires a valid `X-Twilio-Signature`."""
    public_url: str = ""
    """The base URL providers call (`https://hooks.example.com`), for Twilio signatures behind a proxy."""
    route_timeout: Duration = timedelta(seconds=5)
    """How long a reply waits for its flow to show up in Temporal's (eventually consistent) visibility before 404."""
    allow_unsigned: bool = False
    """Only matters when `api.host` is not loopback: true lets the webhooks accept unsigned requests there (without
    it, `up` and `api` refuse to start while `secret` is empty, and `/webhooks/twilio` refuses requests while
    `twilio_auth_token` is)."""

    @field_validator("secret")
    @classmethod
    def _secret_is_base64(cls, value: str) -> str:
        if value:
            webhook_key(value)
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url_is_a_base(cls, value: str) -> str:
        parts = urlsplit(value)
        if value and (parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment):
            raise ValueError(f"expected a base URL such as 'https://hooks.example.com', got {value!r}")
        return value.rstrip("/")


class HttpChannelSettings(_Section):
    """An SMS (or any) gateway that takes `POST url` with JSON `{to, text, campaign_id, workflow_id, step}`."""

    url: str = ""
    """Empty: the channel is not configured."""
    token_env: str = ""
    """Name of the environment variable holding a bearer token (kept out of the file); empty: no token."""
    timeout: Duration = timedelta(seconds=10)
    """Per attempt."""


class SmtpChannelSettings(_Section):
    host: str = ""
    """Empty: the channel is not configured."""
    port: int = Field(587, ge=1, le=65535)
    starttls: bool = True
    username: str = ""
    """Empty: no login."""
    password_env: str = ""
    """Name of the environment variable holding the password (kept out of the file)."""
    sender: str = ""
    """The From address; required with `host`."""
    timeout: Duration = timedelta(seconds=10)

    @model_validator(mode="after")
    def _sender_with_host(self) -> SmtpChannelSettings:
        if self.host and not self.sender:
            raise ValueError("channels.smtp.sender (the From address) is required when channels.smtp.host is set")
        return self


TWILIO_API = "https://api.twilio.com"


class TwilioChannelSettings(_Section):
    """SMS through Twilio's Programmable Messaging REST API (`POST /2010-04-01/Accounts/{sid}/Messages.json`)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    account_sid: str = Field("", pattern=r"^(AC[0-9a-fA-F]{32})?$")
    """The account's SID (`AC…`, 34 characters); empty: the channel is not configured."""
    sender: str = Field("", alias="from")
    """The sending number (E.164, `+15005550006`) or alphanumeric sender id: `from` in the file. One of `from` and
    `messaging_service_sid` is required with `account_sid`; the service SID wins when both are set."""
    messaging_service_sid: str = Field("", pattern=r"^(MG[0-9a-fA-F]{32})?$")
    """A Messaging Service (`MG…`) that picks the sender from its pool."""
    auth_token_env: str = "TWILIO_AUTH_TOKEN"
    """Name of the environment variable holding the auth token (kept out of the file)."""
    api_key_sid: str = Field("", pattern=r"^(SK[0-9a-fA-F]{32})?$")
    """An API key (`SK…`) to log in with instead of the account SID; `auth_token_env` then names its secret."""
    api_base: str = TWILIO_API
    """Where the API is; a test points it at a local stand-in."""
    timeout: Duration = timedelta(seconds=10)
    """Per attempt."""

    @field_validator("api_base")
    @classmethod
    def _api_base_is_a_base(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise ValueError(f"expected a base URL such as {TWILIO_API!r}, got {value!r}")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _sender_with_account(self) -> TwilioChannelSettings:
        if self.account_sid and not (self.sender or self.messaging_service_sid):
            raise ValueError(
                "channels.twilio.from (the sending number) or channels.twilio.messaging_service_sid is required"
                " when channels.twilio.account_sid is set"
            )
        return self


class ChannelsSettings(_Section):
    default: ChannelName = "console"
    """The channel of steps whose `params.channel` is empty."""
    outbox: Path = Path(".scheduler/outbox.jsonl")
    http: HttpChannelSettings = HttpChannelSettings()
    smtp: SmtpChannelSettings = SmtpChannelSettings()
    twilio: TwilioChannelSettings = TwilioChannelSettings()

    def missing(self, channel: str) -> str | None:
        """The config key `channel` needs and lacks (None: it can deliver)."""
        if channel == "http" and not self.http.url:
            return "channels.http.url"
        if channel == "smtp" and not self.smtp.host:
            return "channels.smtp.host"
        if channel == "twilio" and not self.twilio.account_sid:
            return "channels.twilio.account_sid"
        return None

    @model_validator(mode="after")
    def _default_is_configured(self) -> ChannelsSettings:
        if key := self.missing(self.default):
            raise ValueError(f"channels.default is {self.default!r} but {key} is not set")
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter=ENV_NESTED_DELIMITER, extra="forbid")

    temporal: TemporalSettings = TemporalSettings()
    dev_server: DevServerSettings = DevServerSettings()
    api: ApiSettings = ApiSettings()
    campaigns: CampaignsSettings = CampaignsSettings()
    webhooks: WebhooksSettings = WebhooksSettings()
    channels: ChannelsSettings = ChannelsSettings()
    store: StoreSettings = StoreSettings()
    compliance: ComplianceSettings = ComplianceSettings()
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
    def store_url(self) -> str:
        """The consent store's database: `store.url`, else SQLite beside the dev server's database."""
        return self.store.url or f"sqlite:///{self.dev_server.db_file.parent / 'scheduler.db'}"

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
    found = file.is_file()
    if found:
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
    base = file.parent.resolve() if found else Path.cwd()
    settings.source = file.resolve() if found else None
    settings.dev_server.db_file = (base / settings.dev_server.db_file).resolve()
    settings.campaigns.dir = (base / settings.campaigns.dir).resolve()
    settings.channels.outbox = (base / settings.channels.outbox).resolve()
    return settings


def _where(file: Path, error: Any) -> str:
    """Blame the environment variable when one set the bad value, else the file."""
    key = ".".join(str(p) for p in error["loc"])
    env = env_var(key)
    source = env if env in os.environ else str(file)
    return f"{source}: {key}: {str(error['msg']).removeprefix('Value error, ')}"


def config_hint(settings: Settings, key: str) -> str:
    """How a user changes `key` ("api.port"): in their config file or by environment."""
    where = f"in {settings.source}" if settings.source else "in the config file"
    return f"set {key} {where} or {env_var(key)}"
