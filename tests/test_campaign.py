"""Campaign files: TOML or seed-shaped JSON → Campaign, every problem located as `path:line: key: message`."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from scheduler.campaigns.campaign import deep_checks, find_campaign, load_campaign, load_campaign_dir
from scheduler.config import ChannelsSettings
from scheduler.errors import UnknownCampaign
from scheduler.flow.nodes import EventType
from scheduler.problems import Problem
from tests.helpers import ROOT
from tests.helpers.campaigns import BASE, SEED

SHIPPED = ROOT / "campaigns" / "abandoned_cart.toml"
ID_RULE = "is not a valid id: lowercase letters, digits, '-' and '_', at most 63 characters"
FIELDS = "standard cron has 5: minute hour day-of-month month day-of-week"


@pytest.fixture(autouse=True)
def _in_tmp_new_york(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run in tmp_path (so shown paths are relative) with a local zone that is neither UTC nor a campaign's."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def write(text: str, name: str = "c.toml") -> Path:
    path = Path.cwd() / name
    path.write_text(text, encoding="utf-8")
    return path


def load(text: str, name: str = "c.toml") -> tuple[object, list[str]]:
    campaign, problems = load_campaign(write(text, name))
    return campaign, [str(p) for p in problems]


def test_load_campaign_shipped_file_is_valid() -> None:
    campaign, problems = load_campaign(SHIPPED)
    assert problems == []
    assert campaign is not None
    assert campaign.id == "abandoned-cart"
    assert campaign.campaign.owner == "growth@example.com"
    assert campaign.campaign.enabled is True
    assert campaign.schedule is not None
    assert campaign.schedule.cron == ["0 * * * *"]
    assert campaign.schedule.timezone == "UTC"
    assert campaign.schedule.overlap == "skip"
    assert campaign.schedule.catchup_window == timedelta(minutes=1)
    assert campaign.audience is None
    workflow = campaign.workflow
    assert workflow.start_step == "step_1"
    assert workflow.exit_on == ["cart-converted"]
    assert list(workflow.steps) == ["step_1", "step_2", "step_3", "step_4", "step_5", "step_6"]
    assert [s.node for s in workflow.steps.values()] == [
        "send_message",
        "wait_answer",
        "notify_creator",
        "webhook",
        "explicit_wait",
        "send_message",
    ]
    step_2 = workflow.steps["step_2"]
    assert step_2.params == {"timeout": "1m"}
    assert step_2.next_step(EventType.SATISFIED) == "step_3"
    assert step_2.next_step(EventType.TIMEOUT) == "step_4"
    assert step_2.next_step(EventType.NOT_SATISFIED) is None
    assert [workflow.steps[s].go_to for s in ("step_1", "step_4", "step_5")] == ["step_2", "step_5", "step_6"]


def test_load_campaign_shipped_file_has_the_seed_structure() -> None:
    campaign, _ = load_campaign(SHIPPED)
    assert campaign is not None
    steps = campaign.workflow.model_dump(exclude_defaults=True)["steps"]
    seed_steps = json.loads(json.dumps(SEED["steps"]))
    seed_steps["step_5"]["node"] = "explicit_wait"  # the seed's misspelling, canonical in the file
    seed_steps["step_2"]["params"] = {"timeout": "1m"}  # the seed's hard-coded 1 minute, explicit in the file
    assert steps == seed_steps


def test_load_campaign_base_fixture_is_valid() -> None:
    campaign, problems = load(BASE)
    assert problems == []
    assert campaign is not None


def test_load_campaign_toml_syntax_error_reports_its_line() -> None:
    campaign, problems = load(BASE.replace('name = "Spring sale"', 'name = "Spring sale'))
    assert campaign is None
    assert problems == ["c.toml:3: invalid TOML: Illegal character '\\n' (at line 3, column 20)"]


def test_load_campaign_toml_syntax_error_in_a_later_table() -> None:
    _, problems = load(BASE.replace("[workflow.steps.b]", "[workflow.steps.b"))
    assert len(problems) == 1
    assert problems[0].startswith("c.toml:17: invalid TOML: ")


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (BASE, BASE + "\n[extra]\nx = 1\n", "c.toml:24: extra: unknown key"),
        ('name = "Spring sale"', 'title = "Spring sale"', "c.toml:3: campaign.title: unknown key"),
        ('id = "spring-sale"', 'id = "Spring Sale!"', f"c.toml:2: campaign.id: 'Spring Sale!' {ID_RULE}"),
        ('id = "spring-sale"', 'id = ""', f"c.toml:2: campaign.id: '' {ID_RULE}"),
        ('id = "spring-sale"\n', "", "c.toml:1: campaign.id: required key is missing"),
        (
            '["0 9 * * MON-FRI"]',
            '"0 9 * * MON#2"',
            "c.toml:6: schedule.cron: '0 9 * * MON#2': nth-weekday ('#') is not standard cron",
        ),
        (
            '["0 9 * * MON-FRI"]',
            '["0 * * * *", "0 9 L * *"]',
            "c.toml:6: schedule.cron: '0 9 L * *': 'L' (last day) is not standard cron",
        ),
        (
            '["0 9 * * MON-FRI"]',
            '"0 9 ? * *"',
            "c.toml:6: schedule.cron: '0 9 ? * *': '?' is not standard cron; use '*'",
        ),
        (
            '["0 9 * * MON-FRI"]',
            '"0 0 9 * * MON-FRI"',
            f"c.toml:6: schedule.cron: '0 0 9 * * MON-FRI' has 6 fields; {FIELDS} (a 6th field would be read as"
            " seconds or years, not standard cron)",
        ),
        (
            '["0 9 * * MON-FRI"]',
            "[]",
            "c.toml:6: schedule.cron: List should have at least 1 item after validation, not 0",
        ),
        (
            '"Asia/Tokyo"',
            '"Asia/Atlantis"',
            "c.toml:7: schedule.timezone: unknown timezone 'Asia/Atlantis': use an IANA name such as 'Europe/Berlin'",
        ),
        (  # the host's own zone: a different one on every machine
            '"Asia/Tokyo"',
            '"localtime"',
            "c.toml:7: schedule.timezone: unknown timezone 'localtime': use an IANA name such as 'Europe/Berlin'",
        ),
        (
            '"Asia/Tokyo"',
            '"Asia/Tokyo"\njitter = "5x"',
            "c.toml:8: schedule.jitter: invalid duration '5x': use a number and a unit (ms, s, m, h, d, w),"
            " e.g. '90s' or '1h30m'",
        ),
        (
            '"Asia/Tokyo"',
            '"Asia/Tokyo"\noverlap = "never"',
            "c.toml:8: schedule.overlap: Input should be 'skip', 'buffer_one', 'buffer_all', 'cancel_other',"
            " 'terminate_other' or 'allow_all'",
        ),
        (
            'node = "notify_creator"',
            'node = "notify_admin"',
            "c.toml:22: workflow.steps.c.node: unknown node 'notify_admin' (known: explicit_wait, notify_creator,"
            " send_message, split, wait_answer, webhook)",
        ),
        ('go_to = "c"', 'go_to = "z"', "c.toml:19: workflow.steps.b.go_to: unknown step 'z' (steps: a, b, c)"),
        (
            'timeout = "c" }',
            'timeout = "q" }',
            "c.toml:15: workflow.steps.a.condition.timeout: unknown step 'q' (steps: a, b, c)",
        ),
        ('satisfied = "b"', 'answered = "b"', "c.toml:15: workflow.steps.a.condition.answered: unknown key"),
        (
            'timeout = "1m" }',
            'timeout = "5x" }',
            "c.toml:14: workflow.steps.a.params.timeout: invalid duration '5x': use a number and a unit"
            " (ms, s, m, h, d, w), e.g. '90s' or '1h30m'",
        ),
        (
            'timeout = "1m" }',
            'timeout = "1m", tmeout = "2m" }',
            "c.toml:14: workflow.steps.a.params.tmeout: unknown key",
        ),
        ('start_step = "a"', 'start_step = "z"', "c.toml:10: workflow.start_step: unknown step 'z' (steps: a, b, c)"),
        (
            'go_to = "c"',
            'go_to = "a"',
            "c.toml:19: workflow.steps.b.go_to: cycle: a → b → a",
        ),
        (
            '"Asia/Tokyo"',
            '"Asia/Tokyo"\n\n[audience]\nsource = "ftp"',
            "c.toml:10: audience.source: Input should be 'jsonl', 'csv', 'http' or 'sql'",
        ),
    ],
    ids=[
        "unknown-table",
        "unknown-campaign-key",
        "bad-id",
        "empty-id",
        "missing-id",
        "cron-hash",
        "cron-L-in-list",
        "cron-question-mark",
        "cron-six-fields",
        "cron-empty-list",
        "bad-timezone",
        "host-timezone",
        "bad-jitter",
        "bad-overlap",
        "unknown-node",
        "go_to-unknown-step",
        "condition-unknown-step-inline",
        "condition-unknown-event-inline",
        "params-bad-duration-inline",
        "params-unknown-key-inline",
        "unknown-start-step",
        "cycle",
        "bad-audience-source",
    ],
)
def test_load_campaign_error_is_located(old: str, new: str, expected: str) -> None:
    text = new if old == BASE else BASE.replace(old, new, 1)
    assert text != BASE
    campaign, problems = load(text)
    assert campaign is None
    assert problems == [expected]


def test_load_campaign_missing_workflow_table() -> None:
    text = BASE[: BASE.index("[workflow]")]
    campaign, problems = load(text)
    assert campaign is None
    assert problems == ["c.toml:1: workflow: required table [workflow] is missing"]


def test_load_campaign_reports_every_problem_at_once() -> None:
    text = (
        BASE.replace('id = "spring-sale"', 'id = "Spring"')
        .replace('["0 9 * * MON-FRI"]', '"0 9 L * *"')
        .replace('go_to = "c"', 'go_to = "nowhere"')
    )
    campaign, problems = load(text)
    assert campaign is None
    assert problems == [
        f"c.toml:2: campaign.id: 'Spring' {ID_RULE}",
        "c.toml:6: schedule.cron: '0 9 L * *': 'L' (last day) is not standard cron",
        "c.toml:19: workflow.steps.b.go_to: unknown step 'nowhere' (steps: a, b, c)",
    ]


def test_load_campaign_end_at_before_start_at_is_refused() -> None:
    text = BASE.replace('"Asia/Tokyo"', '"Asia/Tokyo"\nstart_at = 2025-03-02\nend_at = 2025-03-01')
    campaign, problems = load(text)
    assert campaign is None
    assert len(problems) == 1
    assert problems[0].endswith(": end_at must be after start_at")


def test_load_campaign_end_at_before_start_at_names_end_at() -> None:
    text = BASE.replace('"Asia/Tokyo"', '"Asia/Tokyo"\nstart_at = 2025-03-02\nend_at = 2025-03-01')
    assert load(text)[1] == ["c.toml:9: schedule.end_at: end_at must be after start_at"]


@pytest.mark.parametrize(
    ("timezone", "valid"),
    [("Asia/Tokyo", True), ("America/New_York", False), ("UTC", True)],
    ids=["tokyo-local-start-is-01Z", "new-york-local-start-is-15Z", "utc-local-start-is-10Z"],
)
def test_load_campaign_local_datetimes_are_read_in_the_campaign_timezone(timezone: str, valid: bool) -> None:
    # start_at has no offset: 10:00 in the campaign's timezone. end_at is 14:00 UTC.
    text = BASE.replace(
        'timezone = "Asia/Tokyo"',
        f'timezone = "{timezone}"\nstart_at = 2025-03-03T10:00:00\nend_at = 2025-03-03T14:00:00Z',
    )
    campaign, problems = load(text)
    assert (campaign is not None) == valid
    assert problems == ([] if valid else ["c.toml:9: schedule.end_at: end_at must be after start_at"])


def test_load_campaign_local_dates_are_midnight() -> None:
    text = BASE.replace('"Asia/Tokyo"', '"Asia/Tokyo"\nstart_at = 2025-03-01\nend_at = 2025-04-01')
    campaign, problems = load(text)
    assert problems == []
    assert campaign is not None and campaign.schedule is not None
    assert campaign.schedule.start_at == datetime(2025, 3, 1)
    assert campaign.schedule.end_at == datetime(2025, 4, 1)


def test_load_campaign_cron_as_a_single_string() -> None:
    campaign, problems = load(BASE.replace('["0 9 * * MON-FRI"]', '"*/15 9-17 * * MON-FRI"'))
    assert problems == []
    assert campaign is not None and campaign.schedule is not None
    assert campaign.schedule.cron == ["*/15 9-17 * * MON-FRI"]


def test_load_campaign_enabled_false_parses() -> None:
    campaign, problems = load(BASE.replace('name = "Spring sale"', 'name = "Spring sale"\nenabled = false'))
    assert problems == []
    assert campaign is not None
    assert campaign.campaign.enabled is False


def test_load_campaign_schedule_defaults() -> None:
    text = BASE.replace('timezone = "Asia/Tokyo"\n', "")
    campaign, problems = load(text)
    assert problems == []
    assert campaign is not None and campaign.schedule is not None
    schedule = campaign.schedule
    assert (schedule.timezone, schedule.jitter, schedule.overlap, schedule.catchup_window) == (
        "UTC",
        timedelta(0),
        "skip",
        timedelta(minutes=1),
    )


def test_load_campaign_audience_fields_with_dotted_names() -> None:
    text = BASE.replace(
        '"Asia/Tokyo"',
        '"Asia/Tokyo"\n\n[audience]\nsource = "jsonl"\npath = "carts.jsonl"\n\n[audience.fields]\n'
        '"cart.id" = "cart_ref"\n"customer.phone" = "mobile"',
    )
    campaign, problems = load(text)
    assert problems == []
    assert campaign is not None and campaign.audience is not None
    assert campaign.audience.fields == {"cart.id": "cart_ref", "customer.phone": "mobile"}


def test_load_campaign_warnings_do_not_block() -> None:
    text = BASE + '\n[workflow.steps.orphan]\nnode = "send_message"\n'
    campaign, problems = load(text)
    assert campaign is not None
    assert problems == ["c.toml:24: workflow.steps.orphan: warning: unreachable from start_step 'a'"]


def test_load_campaign_unreadable_file() -> None:
    campaign, problems = load_campaign(Path.cwd() / "absent.toml")
    assert campaign is None
    assert [str(p) for p in problems] == ["absent.toml:1: cannot read file: No such file or directory"]


def test_problem_str_format() -> None:
    assert str(Problem("campaigns/x.toml", 7, "schedule.cron", "bad")) == "campaigns/x.toml:7: schedule.cron: bad"
    assert str(Problem("x.toml", 3, "workflow.steps.z", "unreachable", warning=True)) == (
        "x.toml:3: workflow.steps.z: warning: unreachable"
    )
    assert str(Problem("x.toml", 1, "", "invalid TOML: oops")) == "x.toml:1: invalid TOML: oops"


def test_problem_path_is_relative_under_cwd_else_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    path = outside / "c.toml"
    path.write_text(BASE.replace('go_to = "c"', 'go_to = "z"'), encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # still under cwd: relative
    assert str(load_campaign(path)[1][0]).startswith("outside/c.toml:19: ")
    sub = outside / "sub"
    sub.mkdir()
    monkeypatch.chdir(sub)  # not under cwd: absolute
    assert str(load_campaign(path)[1][0]).startswith(f"{path}:19: ")


SEED_JSON_WITH_ERRORS = """\
{
  "start_step": "step_1",
  "steps": {
    "step_1": {"node": "send_message", "go_to": "step_2"},
    "step_2": {
      "node": "wait_answer",
      "params": {"timeout": "5x"},
      "condition": {"satisfied": "step_3", "timeout": "step_4"}
    },
    "step_3": {"node": "notify_creator"},
    "step_4": {
      "node": "webhook",
      "go_to": "nowhere"
    },
    "step_5": {"node": "explicity_wait", "go_to": "step_6"},
    "step_6": {"node": "send_message"}
  }
}
"""


def test_load_campaign_seed_json_is_a_campaign_named_by_its_stem() -> None:
    campaign, problems = load_campaign(write(json.dumps(SEED, indent=2), "Seed Flow.json"))
    assert problems == []
    assert campaign is not None
    assert campaign.id == "seed-flow"
    assert campaign.schedule is None
    assert campaign.workflow.steps["step_5"].node == "explicity_wait"
    assert campaign.workflow.model_dump(exclude_defaults=True) == SEED


def test_load_campaign_seed_json_errors_are_on_their_lines() -> None:
    campaign, problems = load(SEED_JSON_WITH_ERRORS, "seed.json")
    assert campaign is None
    assert problems == [
        "seed.json:7: workflow.steps.step_2.params.timeout: invalid duration '5x': use a number and a unit"
        " (ms, s, m, h, d, w), e.g. '90s' or '1h30m'",
        "seed.json:13: workflow.steps.step_4.go_to: unknown step 'nowhere' (steps: step_1, step_2, step_3, step_4,"
        " step_5, step_6)",
        "seed.json:15: workflow.steps.step_5: warning: unreachable from start_step 'step_1'",
        "seed.json:16: workflow.steps.step_6: warning: unreachable from start_step 'step_1'",
    ]


def test_load_campaign_invalid_json_reports_its_line() -> None:
    campaign, problems = load('{\n  "start_step": "a",\n  "steps": {,}\n}\n', "bad.json")
    assert campaign is None
    assert problems == ["bad.json:3: invalid JSON: Expecting property name enclosed in double quotes (column 13)"]


def test_load_campaign_dir_duplicate_ids_name_both_files() -> None:
    directory = Path.cwd() / "campaigns"
    directory.mkdir()
    shutil.copy(SHIPPED, directory / "a.toml")
    shutil.copy(SHIPPED, directory / "b.toml")
    campaigns, problems = load_campaign_dir(directory)
    assert list(campaigns) == ["abandoned-cart"]
    assert campaigns["abandoned-cart"].source == directory / "a.toml"
    line = SHIPPED.read_text(encoding="utf-8").splitlines().index('id = "abandoned-cart"') + 1
    assert [str(p) for p in problems] == [
        f"campaigns/b.toml:{line}: campaign.id: duplicate campaign id 'abandoned-cart': also used by campaigns/a.toml"
    ]


def test_load_campaign_dir_collects_every_file() -> None:
    directory = Path.cwd() / "campaigns"
    directory.mkdir()
    shutil.copy(SHIPPED, directory / "cart.toml")
    (directory / "spring.toml").write_text(BASE, encoding="utf-8")
    (directory / "broken.toml").write_text(BASE.replace('go_to = "c"', 'go_to = "z"'), encoding="utf-8")
    (directory / "notes.txt").write_text("not a campaign", encoding="utf-8")
    campaigns, problems = load_campaign_dir(directory)
    assert sorted(campaigns) == ["abandoned-cart", "spring-sale"]
    assert [str(p) for p in problems] == [
        "campaigns/broken.toml:19: workflow.steps.b.go_to: unknown step 'z' (steps: a, b, c)"
    ]


def test_load_campaign_dir_missing_directory() -> None:
    assert load_campaign_dir(Path.cwd() / "nope") == (
        {},
        [Problem("nope", 1, "", "campaigns directory does not exist")],
    )


def test_find_campaign_returns_the_campaign() -> None:
    directory = Path.cwd() / "campaigns"
    directory.mkdir()
    (directory / "spring.toml").write_text(BASE, encoding="utf-8")
    assert find_campaign(directory, "spring-sale").campaign.name == "Spring sale"


def test_find_campaign_unknown_id_names_broken_files() -> None:
    directory = Path.cwd() / "campaigns"
    directory.mkdir()
    (directory / "spring.toml").write_text(BASE, encoding="utf-8")
    (directory / "broken.toml").write_text(BASE.replace('id = "spring-sale"', 'id = "Bad"'), encoding="utf-8")
    (directory / "warn.toml").write_text(
        BASE.replace("spring-sale", "warned") + '\n[workflow.steps.orphan]\nnode = "send_message"\n', encoding="utf-8"
    )
    with pytest.raises(UnknownCampaign) as exc:
        find_campaign(directory, "autumn-sale")
    assert exc.value.campaign_id == "autumn-sale"
    assert str(exc.value) == (
        "unknown campaign 'autumn-sale': no valid campaign file in 'campaigns' has that id"
        " (files with errors: campaigns/broken.toml; run `scheduler validate`)"
    )


def test_find_campaign_unknown_id_without_broken_files() -> None:
    directory = Path.cwd() / "campaigns"
    directory.mkdir()
    with pytest.raises(UnknownCampaign) as exc:
        find_campaign(directory, "x")
    assert str(exc.value) == "unknown campaign 'x': no valid campaign file in 'campaigns' has that id"


def test_deep_checks_names_a_channel_the_config_cannot_deliver_through() -> None:
    text = BASE.replace('node = "send_message"', 'node = "send_message"\nparams = { channel = "smtp" }', 1)
    campaign, problems = load_campaign(write(text))
    assert campaign is not None and problems == []
    line = text.splitlines().index('params = { channel = "smtp" }') + 1
    found = [str(p) for p in deep_checks(campaign, ChannelsSettings()) if not p.warning]
    assert found == [
        f"c.toml:{line}: workflow.steps.b.params.channel: channel 'smtp' needs channels.smtp.host in the config"
    ]
    configured = ChannelsSettings.model_validate({"smtp": {"host": "127.0.0.1", "sender": "shop@example.com"}})
    assert [p for p in deep_checks(campaign, configured) if not p.warning] == []


def test_deep_checks_names_each_channel_of_a_list_the_config_cannot_deliver_through() -> None:
    params = 'params = { channel = ["http", "smtp", "console"], await_delivery = "2m" }'
    text = BASE.replace('node = "send_message"', f'node = "send_message"\n{params}', 1)
    campaign, problems = load_campaign(write(text))
    assert campaign is not None and problems == []
    line = text.splitlines().index(params) + 1
    found = [str(p) for p in deep_checks(campaign, ChannelsSettings()) if not p.warning]
    assert found == [
        f"c.toml:{line}: workflow.steps.b.params.channel: channel 'http' needs channels.http.url in the config",
        f"c.toml:{line}: workflow.steps.b.params.channel: channel 'smtp' needs channels.smtp.host in the config",
    ]


def test_bad_delivery_params_name_file_line_and_key() -> None:
    params = 'params = { channel = ["http", "http"], await_delivery = "3d" }'
    text = BASE.replace('node = "send_message"', f'node = "send_message"\n{params}', 1)
    campaign, problems = load_campaign(write(text))
    line = text.splitlines().index(params) + 1
    assert campaign is None
    assert [str(p) for p in problems] == [
        f"c.toml:{line}: workflow.steps.b.params.channel: a channel list names each channel once",
        f"c.toml:{line}: workflow.steps.b.params.await_delivery: await_delivery must be more than 0s and at most 1d,"
        " got 3d",
    ]
