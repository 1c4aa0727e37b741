"""`scheduler test`: campaign test cases run as a user runs them (the console script, a campaigns directory of
the test's own), their PASS/FAIL, diffs, JUnit XML and exit codes; tests files are never taken for campaigns."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from scheduler.campaigns.campaign import load_campaign, load_campaign_dir
from scheduler.campaigns.cases import load_cases
from scheduler.campaigns.reconcile import load_campaigns
from scheduler.config import Settings
from tests.helpers import ROOT
from tests.helpers.cli import Run, scheduler
from tests.test_plan_cli import Cli, cli_for

SHOP = """\
[campaign]
id = "shop"
owner = "owner@example.com"

[schedule]
cron = "0 10 * * 1"
timezone = "America/New_York"

[delivery]
quiet_hours = "21:00-08:00"
on_cap = "delay"
max_delay = "2d"

[workflow]
start_step = "ask"
exit_on = ["cart-converted"]

[workflow.steps.ask]
node = "send_message"
params = { template = "Hi {{ customer.name }}, your cart {{ cart.id }} is saved. Reply YES for the link." }
go_to = "listen"

[workflow.steps.listen]
node = "wait_answer"
params = { timeout = "1h" }
condition = { satisfied = "to_owner", timeout = "hook" }

[workflow.steps.listen.intents.yes]
match = ["yes", "sure"]
go_to = "send_link"

[workflow.steps.send_link]
node = "send_message"
params = { template = "Here: {{ cart.url }}" }

[workflow.steps.to_owner]
node = "notify_creator"

[workflow.steps.hook]
node = "webhook"
condition = { satisfied = "nudge", not_satisfied = "sorry" }

[workflow.steps.nudge]
node = "send_message"
params = { template = "Still there? {{ cart.url }}" }

[workflow.steps.sorry]
node = "notify_creator"
"""

WHO = (
    'customer = { id = "c1", name = "Ada", phone = "+1 212 555 0100" }\n'
    'cart = { id = "k1", url = "https://s.example/k1" }'
)
DAY = 'start = "2031-01-06T10:00:00-05:00"'  # a Monday, 10 am in New York: outside the quiet hours

CASES = {
    # name: (body, passes)
    "path right": ('expect.path = ["ask", "listen", "hook", "nudge"]', True),
    "path wrong": ('expect.path = ["ask", "listen", "to_owner"]', False),
    "outcome right": ('replies = [{ after = "5m", text = "STOP" }]\nexpect.outcome = "opted_out"', True),
    "outcome wrong": ('replies = [{ after = "5m", text = "STOP" }]\nexpect.outcome = "completed"', False),
    "contains right": ('expect.messages = [{ step = "ask", contains = "k1" }, { step = "nudge" }]', True),
    "contains wrong": ('expect.messages = [{ step = "ask", contains = "k2" }, { step = "nudge" }]', False),
    "at right": ('expect.messages = [{ step = "ask" }, { step = "nudge", at = "2031-01-06T11:00:00-05:00" }]', True),
    "at wrong": ('expect.messages = [{ step = "ask" }, { step = "nudge", at = "2031-01-06T11:30:00-05:00" }]', False),
    "intent reply": (
        'replies = [{ after = "10m", text = "Sure, send it" }]\nexpect.path = ["ask", "listen", "send_link"]\n'
        'expect.messages = [{ step = "ask" }, { step = "send_link", at = "2031-01-06T10:10:00-05:00" }]',
        True,
    ),
    "an answer no intent matches": (
        'replies = [{ after = "10m", text = "hm?" }]\nexpect.path = ["ask", "listen", "to_owner"]',
        True,
    ),
    "webhook failure": ('webhooks = { hook = 503 }\nexpect.path = ["ask", "listen", "hook", "sorry"]', True),
    "webhook 4xx": ('webhooks = { hook = 404 }\nexpect.path = ["ask", "listen", "hook", "sorry"]', True),
    "suppressed": (
        'suppressed = true\nexpect.path = ["ask"]\nexpect.outcome = "opted_out"\nexpect.messages = []',
        True,
    ),
    "purchase": ('conversions = [{ after = "30m" }]\nexpect.outcome = "converted"\nexpect.path = ["ask"]', True),
}
QUIET = (
    'start = "2031-01-06T22:30:00-05:00"\nreplies = [{ after = "10h", text = "yes" }]\n'
    'expect.path = ["ask", "listen", "send_link"]\n'
    'expect.messages = [{ step = "ask", at = "2031-01-07T08:00:00-05:00" }, { step = "send_link" }]'
)
"""10:30 pm in New York: the ask is held until 8 am; the reply (10h after the start) comes after it."""
CAPPED = (
    'history = [{ channel = "console", ago = "2h" }]\n'
    'expect.messages = [{ step = "ask", at = "2031-01-07T08:00:00-05:00" }, { step = "nudge" }]'
)
"""One console message 2h before the start, under a cap of 1 per 24h: the ask waits 22h, until 8 am next day."""
UNCAPPED = (
    'expect.messages = [{ step = "ask", at = "2031-01-06T10:00:00-05:00" },'
    ' { step = "nudge", at = "2031-01-07T10:00:00-05:00" }]'
)
"""No earlier send: the ask goes at once, and the cap holds the nudge an hour later until a day after the ask."""


def case(name: str, body: str, *, who: str = WHO, start: str = DAY) -> str:
    return f'[[case]]\nname = "{name}"\n{who}\n{start}\n{body}\n\n'


def cases_file() -> str:
    text = "".join(case(name, body) for name, (body, _) in CASES.items())
    return text + case("quiet hours hold the ask", QUIET, start="")


async def run_test(config: Path, *args: str | Path) -> Run:
    return await scheduler("test", *args, "--config", config, cwd=config.parent)


CAP = '\n[[compliance.frequency_caps]]\nchannels = ["console"]\nmax = 1\nper = "24h"\n'


def write_config(tmp_path: Path, *, caps: str = "") -> Path:
    """A config (no Temporal address needed: `test` starts its own server) and a campaigns directory with
    `shop.toml`; the service's own quiet hours are off (the campaign has its own)."""
    (tmp_path / "campaigns").mkdir(exist_ok=True)
    (tmp_path / "campaigns" / "shop.toml").write_text(SHOP, encoding="utf-8")
    config = tmp_path / "scheduler.toml"
    config.write_text(
        '[campaigns]\ndir = "campaigns"\n\n[channels]\noutbox = "outbox.jsonl"\n\n[compliance]\nquiet_hours = ""\n'
        + caps,
        encoding="utf-8",
    )
    return config


@pytest_asyncio.fixture
async def project(tmp_path: Path) -> AsyncIterator[Path]:
    yield write_config(tmp_path)


async def test_each_kind_of_expectation_passes_and_fails_and_junit_reads_back(project: Path) -> None:
    tests = project.parent / "campaigns" / "shop.tests.toml"
    tests.write_text(cases_file(), encoding="utf-8")
    junit = project.parent / "out" / "junit.xml"
    junit.parent.mkdir()

    run = await run_test(project, "--junit", junit)

    assert run.code == 1, run
    failing = {name for name, (_, passes) in CASES.items() if not passes}
    for name, (_, passes) in CASES.items():
        assert f"  {'PASS' if passes else 'FAIL'}  {name}\n" in run.stdout, (name, run.stdout)
    assert "  PASS  quiet hours hold the ask\n" in run.stdout, run.stdout
    total = len(CASES) + 1
    assert run.stdout.splitlines()[-1].startswith(f"{total - len(failing)} passed, {len(failing)} failed in ")
    # The diffs: expected and actual side by side, times in the customer's zone.
    assert "path     expected: ask → listen → to_owner\n                 actual:   ask → listen → hook → nudge" in (
        run.stdout
    )
    assert "outcome  expected: completed\n                 actual:   opted_out" in run.stdout
    assert "containing 'k2'" in run.stdout
    assert "nudge at 2031-01-06 11:30:00" in run.stdout and "nudge at 2031-01-06 11:00:00: 'Still there?" in run.stdout
    assert (
        "messages expected, times in America/New_York:\n          ask\n          nudge at 2031-01-06 11:30:00  ✗\n"
        in (run.stdout)
    )

    root = ET.parse(junit).getroot()
    (suite,) = root.findall("testsuite")
    assert (suite.get("name"), suite.get("tests"), suite.get("failures")) == ("shop", str(total), str(len(failing)))
    by_name = {c.get("name"): c for c in suite.findall("testcase")}
    assert set(by_name) == {*CASES, "quiet hours hold the ask"}
    failed = {name for name, c in by_name.items() if c.find("failure") is not None}
    assert failed == failing
    failure = by_name["path wrong"].find("failure")
    assert failure is not None
    assert failure.get("message") == "path differs"
    assert "expected: ask → listen → to_owner" in (failure.text or "")


async def test_a_cap_from_history_holds_the_message(tmp_path: Path) -> None:
    config = write_config(tmp_path, caps=CAP)
    tests = tmp_path / "campaigns" / "shop.tests.toml"
    tests.write_text(
        case("capped by an earlier send", CAPPED) + case("its own ask caps the nudge", UNCAPPED), encoding="utf-8"
    )
    capped_too_soon = CAPPED.replace("2031-01-07T08:00", "2031-01-06T10:00")
    wrong = tmp_path / "wrong" / "shop.tests.toml"
    wrong.parent.mkdir()
    (tmp_path / "wrong" / "shop.toml").write_text(SHOP, encoding="utf-8")
    wrong.write_text(case("expects the ask at once despite the earlier send", capped_too_soon), encoding="utf-8")

    run, failed = await run_test(config, tests), await run_test(config, wrong)

    assert run.code == 0, run
    assert "  PASS  capped by an earlier send\n" in run.stdout, run.stdout
    assert "  PASS  its own ask caps the nudge\n" in run.stdout, run.stdout
    assert failed.code == 1, failed
    assert "  ask at 2031-01-07 08:00:00: 'Hi Ada, your cart k1 is saved." in failed.stdout, failed.stdout


async def test_a_flow_that_fails_fails_its_case_unless_the_case_expects_it(project: Path) -> None:
    campaigns = project.parent / "campaigns"
    (campaigns / "shop.toml").write_text(SHOP.replace('the link." }', 'the link.", channel = "http" }'))
    (campaigns / "shop.tests.toml").write_text(
        case("expects nothing", "") + case("expects the failure", 'expect.outcome = "failed"'), encoding="utf-8"
    )

    run = await run_test(project)

    assert run.code == 1, run
    assert (
        "  FAIL  expects nothing\n        the flow failed: ChannelNotConfigured: channel 'http' is not configured"
        in run.stdout
    )
    assert "  PASS  expects the failure\n" in run.stdout


@pytest.mark.parametrize(
    ("body", "line", "expected"),
    [
        ('start = "2031-01-06T21:30:00"', 6, "case[2].start: start needs an offset"),
        ("start = 2031-01-06T21:30:00", 6, "case[2].start: start needs an offset"),
        ('start = "2001-01-06T21:30:00Z"', 6, "case[2].start: 2001-01-06T21:30:00+00:00 is in the past"),
        (
            'expect.path = ["ask", "lisen"]',
            6,
            "case[2].expect.path[2]: unknown step 'lisen' (the campaign's steps: ask,",
        ),
        (
            'expect.messages = [\n  { step = "ask" },  # a comment, {\n  { step = "nope" },\n]',
            8,
            "case[2].expect.messages[2].step: unknown",
        ),
        ("webhooks = { ask = 500 }", 6, "case[2].webhooks.ask: step 'ask' is a send_message, not a webhook"),
        ('replies = [{ after = "soon", text = "yes" }]', 6, "case[2].replies[1].after: invalid duration 'soon'"),
        ("colour = 1", 6, "case[2].colour: unknown key"),
        ('history = [{ channel = "console" }]', 6, "case[2].history[1].ago: required key is missing"),
        ("start = 2031-01-06", 6, "case[2].start: start needs a date, a time and an offset"),
        (
            'expect.messages = [{ step = "ask", at = 08:00:00 }]',
            6,
            "case[2].expect.messages[1].at: at needs a date, a time and an offset",
        ),
        ('history = [{ channel = "sms", ago = "1h" }]', 6, "case[2].history[1].channel: "),
    ],
    ids=[
        "no-offset",
        "no-offset-toml-datetime",
        "past",
        "unknown-step",
        "unknown-message-step",
        "not-a-webhook",
        "bad-after",
        "unknown-key",
        "no-ago",
        "toml-date",
        "toml-time",
        "unknown-channel",
    ],
)
async def test_a_bad_case_is_file_line_key_and_exit_2(project: Path, body: str, line: int, expected: str) -> None:
    tests = project.parent / "campaigns" / "shop.tests.toml"
    tests.write_text('[[case]]\nname = "fine"\n\n[[case]]\nname = "broken"\n' + body + "\n", encoding="utf-8")

    run, validated = await run_test(project), await scheduler("validate", "--config", project, cwd=project.parent)

    assert run.code == 2, run
    assert run.stdout == ""
    assert f"campaigns/shop.tests.toml:{line}: {expected}" in run.stderr, run.stderr
    assert "no case ran" in run.stderr
    assert "Traceback" not in run.stderr
    assert validated.code == 1, validated
    assert f"campaigns/shop.tests.toml:{line}: {expected}" in validated.stdout + validated.stderr, validated


async def test_untested_campaigns_pass_unless_required(project: Path) -> None:
    plain = await run_test(project)
    required = await run_test(project, "--require", project.parent / "campaigns" / "shop.toml")

    assert plain.code == 0, plain
    assert plain.stdout.splitlines() == [
        "untested: campaigns/shop.toml has no shop.tests.toml",
        plain.stdout.splitlines()[-1],
    ]
    assert plain.stdout.splitlines()[-1].startswith("0 passed, 0 failed, 1 campaign(s) untested in ")
    assert required.code == 1, required
    assert "FAIL: campaigns/shop.toml has no shop.tests.toml" in required.stdout


async def test_the_shipped_campaigns_pass_their_tests() -> None:
    """(In about a second; no bound is asserted: these machines are noisy.)"""
    run = await scheduler("test", "--require", cwd=ROOT)
    assert run.code == 0, run
    assert run.stdout.splitlines()[-1].startswith("12 passed, 0 failed in "), run.stdout


@pytest.mark.parametrize("stem", ["abandoned_cart", "sms_reply_intents"])
async def test_the_shipped_tests_files_cover_every_path_simulate_finds(stem: str) -> None:
    campaign, _ = load_campaign(ROOT / "campaigns" / f"{stem}.toml")
    tests, problems = load_cases(ROOT / "campaigns" / f"{stem}.tests.toml", campaign)
    assert tests is not None, problems
    simulated = await scheduler("simulate", ROOT / "campaigns" / f"{stem}.toml", "--all-paths", "--json")
    assert simulated.code == 0, simulated

    paths = {tuple(p["path"]) for p in json.loads(simulated.stdout)}
    covered = {tuple(c.expect.path) for c in tests.cases if c.expect.path is not None}

    assert len(paths) >= 3
    assert paths <= covered


async def test_a_tests_file_is_never_loaded_as_a_campaign(
    dev_env: WorkflowEnvironment, settings: Settings, task_queue: str, tmp_path: Path
) -> None:
    async with cli_for(dev_env.client, settings, task_queue, tmp_path) as cli:
        await _plan_apply_and_reconcile_skip_tests_files(cli, settings)


async def _plan_apply_and_reconcile_skip_tests_files(cli: Cli, settings: Settings) -> None:
    c = cli.c
    c.write("a")
    tests = c.dir / "a.tests.toml"
    tests.write_text('[[case]]\nname = "x"\n', encoding="utf-8")  # as a campaign: no [campaign], no [workflow]

    campaigns, problems = load_campaign_dir(c.dir)
    assert (list(campaigns), problems) == ([c.id("a")], [])
    assert (await load_campaigns(settings))[1] == []  # the reconcile loop's and the API's loader
    planned = await cli("plan")
    applied = await cli("apply")
    validated = await cli("validate")
    synced = await c.sync()

    assert planned.code == 2, planned  # 2: changes to make, no error
    assert planned.stdout.splitlines() == [f"create {c.id('a')}", "plan: 1 create"]
    assert applied.code == 0, applied
    assert applied.stdout.splitlines() == [f"create {c.id('a')}", "applied: 1 create"]
    assert validated.code == 0, validated
    assert validated.stdout.strip() == "ok: 2 file(s) valid"
    assert not synced.problems


def test_a_problem_without_a_line_of_its_own_is_at_its_case_header(tmp_path: Path) -> None:
    (tmp_path / "shop.toml").write_text(SHOP, encoding="utf-8")
    campaign, _ = load_campaign(tmp_path / "shop.toml")
    tests = tmp_path / "shop.tests.toml"
    tests.write_text('# cases\n\n[[case]]\nname = "a"\n\n\n[[case]]\ncustomer = { id = "c2" }\n', encoding="utf-8")

    loaded, problems = load_cases(tests, campaign)

    assert loaded is None
    assert [str(p) for p in problems] == [f"{tests}:7: case[2].name: required key is missing"]
