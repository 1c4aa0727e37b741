"""Service settings: config/scheduler.toml, SCHEDULER_CONFIG, SCHEDULER_<SECTION>__<KEY> overrides, relative paths."""

from __future__ import annotations

import base64
import os
import secrets
from datetime import timedelta
from pathlib import Path

import pytest

from scheduler.config import TASK_QUEUE, ApiSettings, config_hint, load_settings
from scheduler.errors import ConfigError
from tests.helpers import ROOT
from tests.helpers.cli import assert_one_line_error, scheduler

SHIPPED = ROOT / "config" / "scheduler.toml"


@pytest.fixture(autouse=True)
def _clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No SCHEDULER_* variables from the outside, and a working directory without config/."""
    for name in list(os.environ):
        if name.startswith("SCHEDULER_"):
            monkeypatch.delenv(name)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)


def write_config(directory: Path, text: str, name: str = "scheduler.toml") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def test_load_settings_defaults_without_a_file() -> None:
    settings = load_settings()
    cwd = Path.cwd()
    assert settings.source is None
    assert settings.temporal.address == ""
    assert settings.temporal.namespace == "default"
    assert settings.temporal.task_queue == TASK_QUEUE == "primary-workflow-task-queue"
    assert settings.dev_server.port == 7233
    assert settings.dev_server.ui_port == 8233
    assert (settings.api.host, settings.api.port) == ("127.0.0.1", 8081)
    assert settings.campaigns.reconcile_every == timedelta(seconds=30)
    assert settings.campaigns.default == "abandoned-cart"
    assert settings.channels.default == "console"
    assert settings.campaigns.dir == cwd / "campaigns"
    assert settings.dev_server.db_file == cwd / ".scheduler" / "temporal.db"
    assert settings.channels.outbox == cwd / ".scheduler" / "outbox.jsonl"


def test_load_settings_default_file_is_cwd_config(tmp_path: Path) -> None:
    write_config(Path.cwd() / "config", '[api]\nport = 8123\n[campaigns]\ndir = "../flows"\n')
    settings = load_settings()
    assert settings.source == Path.cwd() / "config" / "scheduler.toml"
    assert settings.api.port == 8123
    assert settings.campaigns.dir == tmp_path / "work" / "flows"


def test_load_settings_shipped_file_resolves_paths_from_its_directory() -> None:
    settings = load_settings(SHIPPED)
    assert settings.source == SHIPPED
    assert settings.campaigns.dir == ROOT / "campaigns"
    assert (settings.campaigns.dir / "abandoned_cart.toml").is_file()
    assert settings.dev_server.db_file == ROOT / ".scheduler" / "temporal.db"
    assert settings.channels.outbox == ROOT / ".scheduler" / "outbox.jsonl"
    assert settings.api.port == 8081
    assert settings.temporal_address == "127.0.0.1:7233"


def test_load_settings_relative_path_argument_resolves_from_the_file(tmp_path: Path) -> None:
    write_config(Path.cwd() / "etc", '[campaigns]\ndir = "flows"\n')
    settings = load_settings("etc/scheduler.toml")
    assert settings.source == tmp_path / "work" / "etc" / "scheduler.toml"
    assert settings.campaigns.dir == tmp_path / "work" / "etc" / "flows"


def test_load_settings_absolute_paths_are_kept(tmp_path: Path) -> None:
    path = write_config(tmp_path / "etc", f'[channels]\noutbox = "{tmp_path / "out.jsonl"}"\n')
    assert load_settings(path).channels.outbox == tmp_path / "out.jsonl"


def test_load_settings_env_overrides_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHEDULER_API__PORT", "9000")
    monkeypatch.setenv("SCHEDULER_TEMPORAL__NAMESPACE", "prod")
    settings = load_settings(SHIPPED)
    assert settings.api.port == 9000
    assert settings.temporal.namespace == "prod"
    assert settings.api.host == "127.0.0.1"  # the rest of the section still comes from the file


def test_load_settings_env_overrides_a_duration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHEDULER_CAMPAIGNS__RECONCILE_EVERY", "2m")
    assert load_settings(SHIPPED).campaigns.reconcile_every == timedelta(minutes=2)


def test_load_settings_scheduler_config_picks_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(tmp_path / "elsewhere", "[api]\nport = 8500\n")
    monkeypatch.setenv("SCHEDULER_CONFIG", str(path))
    settings = load_settings()
    assert settings.source == path
    assert settings.api.port == 8500
    assert settings.campaigns.dir == tmp_path / "elsewhere" / "campaigns"


def test_load_settings_explicit_path_wins_over_scheduler_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCHEDULER_CONFIG", str(write_config(tmp_path / "a", "[api]\nport = 8001\n")))
    assert load_settings(write_config(tmp_path / "b", "[api]\nport = 8002\n")).api.port == 8002


def test_load_settings_explicit_missing_file_is_an_error() -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings("nope/scheduler.toml")
    assert str(exc.value) == "config file 'nope/scheduler.toml' does not exist"


def test_load_settings_missing_scheduler_config_file_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHEDULER_CONFIG", "missing.toml")
    with pytest.raises(ConfigError) as exc:
        load_settings()
    assert str(exc.value) == "config file 'missing.toml' does not exist"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[api]\nbogus = 1\n", "api.bogus: Extra inputs are not permitted"),
        ("[database]\nurl = 'x'\n", "database: Extra inputs are not permitted"),
        ('[api]\nport = "abc"\n', "api.port: Input should be a valid integer, unable to parse string as an integer"),
        ("[api]\nport = 70000\n", "api.port: Input should be less than or equal to 65535"),
        ('[campaigns]\nreconcile_every = "soon"\n', "campaigns.reconcile_every: invalid duration 'soon'"),
        ('[temporal]\ntls = "maybe"\n', "temporal.tls: Input should be a valid boolean, unable to interpret input"),
    ],
    ids=["unknown-key", "unknown-section", "port-not-int", "port-out-of-range", "bad-duration", "bad-bool"],
)
def test_load_settings_bad_value_names_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = write_config(tmp_path / "etc", text)
    with pytest.raises(ConfigError) as exc:
        load_settings(path)
    assert str(exc.value).startswith(f"{path}: {message}")
    assert "\n" not in str(exc.value)


def test_load_settings_reports_every_bad_key(tmp_path: Path) -> None:
    path = write_config(tmp_path / "etc", '[api]\nport = "abc"\nbogus = 1\n')
    with pytest.raises(ConfigError) as exc:
        load_settings(path)
    assert str(exc.value).splitlines() == [
        f"{path}: api.port: Input should be a valid integer, unable to parse string as an integer",
        f"{path}: api.bogus: Extra inputs are not permitted",
    ]


def test_load_settings_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = write_config(tmp_path / "etc", "[api\nport = 1\n")
    with pytest.raises(ConfigError) as exc:
        load_settings(path)
    assert (
        str(exc.value) == f"{path}: invalid TOML: Expected ']' at the end of a table declaration (at line 1, column 5)"
    )


@pytest.mark.parametrize(
    ("text", "address", "embedded"),
    [
        ("", "127.0.0.1:7233", True),
        ("[dev_server]\nport = 7300\n", "127.0.0.1:7300", True),
        ('[temporal]\naddress = "temporal.internal:7233"\n', "temporal.internal:7233", False),
        (
            '[temporal]\naddress = "temporal.internal:7233"\n[dev_server]\nport = 7300\n',
            "temporal.internal:7233",
            False,
        ),
    ],
    ids=["embedded-default-port", "embedded-custom-port", "cluster", "cluster-ignores-dev-port"],
)
def test_settings_temporal_address(tmp_path: Path, text: str, address: str, embedded: bool) -> None:
    settings = load_settings(write_config(tmp_path / "etc", text))
    assert settings.temporal_address == address
    assert settings.embedded is embedded


def test_config_hint_names_the_file_and_env_var() -> None:
    settings = load_settings(SHIPPED)
    assert config_hint(settings, "api.port") == f"set api.port in {SHIPPED} or SCHEDULER_API__PORT"
    assert config_hint(settings, "dev_server.ui_port") == (
        f"set dev_server.ui_port in {SHIPPED} or SCHEDULER_DEV_SERVER__UI_PORT"
    )


def test_config_hint_without_a_file() -> None:
    settings = load_settings()
    assert (
        config_hint(settings, "webhooks.secret")
        == "set webhooks.secret in the config file or SCHEDULER_WEBHOOKS__SECRET"
    )


def test_load_settings_bad_env_value_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHEDULER_API__PORT", "abc")
    with pytest.raises(ConfigError) as exc:
        load_settings(SHIPPED)
    assert "api.port: Input should be a valid integer, unable to parse string as an integer" in str(exc.value)


def test_load_settings_bad_env_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHEDULER_API__PORT", "abc")
    with pytest.raises(ConfigError) as exc:
        load_settings(SHIPPED)
    assert "SCHEDULER_API__PORT" in str(exc.value)
    assert str(SHIPPED) not in str(exc.value)


WEAK_SECRETS = {
    "two-characters": "ab",
    "the-old-test-secret": "unsubscribe-secret-for-tests",
    "31-characters": secrets.token_urlsafe(32)[:31],
    "one-character-repeated": "x" * 64,
    "few-different": "abcabcabc" * 8,
}
MAKE_ONE = "python -c 'import secrets;print(secrets.token_urlsafe(32))'"


@pytest.mark.parametrize("secret", WEAK_SECRETS.values(), ids=WEAK_SECRETS.keys())
def test_a_weak_unsubscribe_secret_is_a_config_error(tmp_path: Path, secret: str) -> None:
    """The secret signs unsubscribe links: a short or repetitive one is found from one link, then links are forged."""
    path = write_config(tmp_path, f'[compliance]\nunsubscribe_secret = "{secret}"\n')
    with pytest.raises(ConfigError) as exc:
        load_settings(path)
    message = str(exc.value)
    assert message.startswith(f"{path}: compliance.unsubscribe_secret: ")
    assert "SCHEDULER_COMPLIANCE__UNSUBSCRIBE_SECRET" in message and MAKE_ONE in message
    assert "\n" not in message and secret not in message


@pytest.mark.parametrize(
    "secret",
    ["", secrets.token_urlsafe(32), secrets.token_hex(32), "q8ZkX0v3Qf9rL2mN7pT4wY6bC1dE5gHj"],
    ids=["empty-means-off", "token_urlsafe", "token_hex", "32-characters"],
)
def test_a_strong_or_empty_unsubscribe_secret_is_accepted(tmp_path: Path, secret: str) -> None:
    path = write_config(tmp_path, f'[compliance]\nunsubscribe_secret = "{secret}"\n')
    assert load_settings(path).compliance.unsubscribe_secret == secret


def test_a_weak_unsubscribe_secret_from_the_environment_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHEDULER_COMPLIANCE__UNSUBSCRIBE_SECRET", "hunter2")
    with pytest.raises(ConfigError) as exc:
        load_settings(SHIPPED)
    assert str(exc.value).startswith("SCHEDULER_COMPLIANCE__UNSUBSCRIBE_SECRET: compliance.unsubscribe_secret: ")


async def test_validate_with_a_weak_unsubscribe_secret_exits_1_with_one_line(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[compliance]\nunsubscribe_secret = "ab"\n')
    run = await scheduler("validate", "--config", path)
    assert_one_line_error(run, "compliance.unsubscribe_secret", "SCHEDULER_COMPLIANCE__UNSUBSCRIBE_SECRET", MAKE_ONE)


def whsec(size: int) -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(size)).decode()


@pytest.mark.parametrize("size", [1, 16, 23], ids=lambda n: f"{n}-bytes")
async def test_a_short_webhooks_secret_is_a_config_error(tmp_path: Path, size: int) -> None:
    """A Standard Webhooks key under the specification's 24 bytes is found from one signed request."""
    secret = whsec(size)
    path = write_config(tmp_path, f'[webhooks]\nsecret = "{secret}"\n')
    with pytest.raises(ConfigError, match=f"webhooks.secret: too weak a Standard Webhooks secret: its key is {size}"):
        load_settings(path)
    run = await scheduler("validate", "--config", path)
    assert_one_line_error(run, "webhooks.secret", "token_bytes(32)")
    assert secret not in run.stderr


@pytest.mark.parametrize("size", [24, 32, 64])
def test_a_webhooks_secret_of_24_bytes_or_more_is_accepted(tmp_path: Path, size: int) -> None:
    secret = whsec(size)
    assert load_settings(write_config(tmp_path, f'[webhooks]\nsecret = "{secret}"\n')).webhooks.secret == secret


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("api.example.com", False),
    ],
    ids=lambda v: str(v),
)
def test_api_settings_on_loopback(host: str, loopback: bool) -> None:
    assert ApiSettings(host=host).on_loopback is loopback
