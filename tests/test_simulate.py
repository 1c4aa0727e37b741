"""`scheduler simulate`: the real flow code on a time-skipping test server, run as a user runs it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from scheduler.campaigns.campaign import load_campaign
from scheduler.config import Settings
from scheduler.flow.definition import WorkflowDefinition
from scheduler.flow.simulation import PlannedReply, SimulationPlan
from scheduler.simulate import all_plans, count_paths, simulate
from tests.helpers import ROOT
from tests.helpers.campaigns import STOP_THEN_TELL, WAITING, campaign_toml
from tests.helpers.cli import assert_one_line_error, scheduler

SHIPPED = ROOT / "campaigns" / "abandoned_cart.toml"
NUDGE = (
    "Hi Ada, you left something in your cart: https://shop.example/cart/1."
    " Reply to this message if you have a question."
)


async def simulated(*args: str | Path) -> list[dict[str, Any]]:
    run = await scheduler("simulate", *args, "--json")
    assert run.code == 0, run
    paths: list[dict[str, Any]] = json.loads(run.stdout)
    return paths


def texts(path: dict[str, Any]) -> list[tuple[str, str]]:
    return [(m["step"], m["text"]) for m in path["messages"]]


async def test_all_paths_of_the_shipped_campaign_are_its_three_with_their_messages() -> None:
    paths = await simulated(SHIPPED, "--all-paths")
    by_path = {tuple(p["path"]): p for p in paths}
    assert set(by_path) == {
        ("step_1", "step_2", "step_3"),
        ("step_1", "step_2"),
        ("step_1", "step_2", "step_4", "step_5", "step_6"),
    }
    answered = by_path["step_1", "step_2", "step_3"]
    assert answered["outcome"] == "completed"
    assert answered["events"] == ["condition_satisfied", "condition_satisfied", "condition_satisfied"]
    notice = "Abandoned cart nudge: customer Ada: the customer answered: yes (flow simulate-abandoned-cart-0)."
    assert texts(answered) == [("step_1", NUDGE), ("step_3", notice)]
    opted_out = by_path["step_1", "step_2"]
    assert (opted_out["outcome"], opted_out["events"][-1]) == ("opted_out", "condition_not_satisfied")
    assert texts(opted_out) == [("step_1", NUDGE)]
    timed_out = by_path["step_1", "step_2", "step_4", "step_5", "step_6"]
    assert timed_out["outcome"] == "completed"
    assert timed_out["events"][1] == "condition_timeout"
    assert texts(timed_out) == [("step_1", NUDGE), ("step_6", NUDGE)]
    first, last = (datetime.fromisoformat(m["at"]) for m in timed_out["messages"])
    assert timedelta(minutes=2) <= last - first < timedelta(minutes=2, seconds=2)  # the 1m wait and the 1m sleep

    table = await scheduler("simulate", SHIPPED, "--all-paths")
    assert table.code == 0, table
    lines = table.stdout.splitlines()
    assert lines[0] == f"{SHIPPED}: 4 combination(s) to run"
    assert lines[1] == "3 path(s) from 4 combination(s) of replies and webhook results"
    assert "[step_2=timed_out, step_4=2xx | step_2=timed_out, step_4=failure]" in table.stdout


async def test_a_reply_after_30s_takes_the_satisfied_branch_30s_later() -> None:
    (path,) = await simulated(SHIPPED, "--reply", "step_2=yes please@30s")
    assert path["path"] == ["step_1", "step_2", "step_3"]
    sent, notified = (datetime.fromisoformat(m["at"]) for m in path["messages"])
    assert timedelta(seconds=30) <= notified - sent < timedelta(seconds=32)
    assert path["messages"][1]["text"].endswith("the customer answered: yes please (flow simulate-abandoned-cart-0).")

    (silent,) = await simulated(SHIPPED)  # no reply: the wait times out
    assert silent["path"] == ["step_1", "step_2", "step_4", "step_5", "step_6"]
    (bought,) = await simulated(SHIPPED, "--convert-at", "10s")  # exit_on = ["cart-converted"]
    assert (bought["path"], bought["outcome"]) == (["step_1"], "converted")


async def test_quiet_hours_move_a_message_to_the_end_of_the_window(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    window = f"{now - timedelta(hours=1):%H:%M}-{now + timedelta(hours=1):%H:%M}"
    held = tmp_path / "held.toml"
    held.write_text(
        campaign_toml("held", workflow=f'[delivery]\nquiet_hours = "{window}"\n\n' + ONE_SEND), encoding="utf-8"
    )
    customer = json.dumps({"id": "c1", "name": "Ada", "phone": "+12125550100", "timezone": "UTC"})
    (path,) = await simulated(held, "--customer", customer)
    (message,) = path["messages"]
    end = (now + timedelta(hours=1)).replace(second=0, microsecond=0)
    assert end <= datetime.fromisoformat(message["at"]) < end + timedelta(seconds=5)
    (step,) = path["steps"]
    assert datetime.fromisoformat(step["held_until"]) == end
    assert step["zone"] == "customer.timezone: UTC"

    table = await scheduler("simulate", held, "--customer", customer)
    assert f"held until {end:%H:%M:%S} UTC" in table.stdout


ONE_SEND = """\
[workflow]
start_step = "send"

[workflow.steps.send]
node = "send_message"
params = { template = "Hi {{ customer.name }}" }
"""


async def test_a_template_that_fails_to_render_fails_its_path_with_exit_1(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text(campaign_toml("broken", workflow=ONE_SEND.replace("customer.name", "1 / 0")), encoding="utf-8")
    run = await scheduler("simulate", broken)
    assert run.code == 1, run
    assert run.stderr.startswith("error: path send (no reply) failed: TemplateError: step 'send' (template")
    assert "division by zero" in run.stderr
    assert "FAILED: TemplateError" in run.stdout

    empty = tmp_path / "empty.toml"
    empty.write_text(
        campaign_toml("empty", workflow=ONE_SEND.replace("Hi {{ customer.name }}", "{{ cart.coupon }}")),
        encoding="utf-8",
    )
    (path,) = await simulated(empty)  # it goes out (exit 0), but it is flagged
    assert (path["outcome"], path["messages"][0]["text"], path["warnings"]) == (
        "completed",
        "",
        ["step 'send' rendered an empty message"],
    )


async def test_bad_arguments_are_one_line_errors(tmp_path: Path) -> None:
    assert_one_line_error(await scheduler("simulate", SHIPPED, "--reply", "step_9=yes"), "step_2")
    assert_one_line_error(await scheduler("simulate", SHIPPED, "--reply", "step_2=yes@soon"), "--reply")
    assert_one_line_error(await scheduler("simulate", SHIPPED, "--all-paths", "--reply", "step_2=x"), "--all-paths")
    assert_one_line_error(await scheduler("simulate", SHIPPED, "--at", "2001-01-01T00:00:00Z"), "in the past")
    assert_one_line_error(await scheduler("simulate", SHIPPED, "--all-paths", "--max-paths", "3"), "4 combinations")


def test_paths_are_counted_without_making_them() -> None:
    campaign, _ = load_campaign(SHIPPED)
    assert campaign is not None
    assert count_paths(campaign.workflow) == len(all_plans(campaign.workflow)) == 4
    # 20 webhooks in a row: a million combinations, counted at once (and refused over --max-paths)
    steps = {f"w{i}": {"node": "webhook", "go_to": f"w{i + 1}" if i < 19 else None} for i in range(20)}
    wide = WorkflowDefinition.model_validate({"start_step": "w0", "steps": steps})
    assert count_paths(wide) == 2**20


async def test_after_an_opt_out_no_later_message_goes(tmp_path: Path) -> None:
    after_stop = tmp_path / "after.toml"
    workflow = (
        WAITING
        + """\
condition = { not_satisfied = "sorry", timeout = "sorry" }

[workflow.steps.sorry]
node = "send_message"
params = { template = "Sorry to see you go" }
"""
    )
    # Sent at any hour: in the service's quiet hours the timeout's "sorry" would be held past the late STOP.
    no_quiet_hours = '[delivery]\nquiet_hours = ""\n\n'
    after_stop.write_text(campaign_toml("after", workflow=no_quiet_hours + workflow), encoding="utf-8")
    (stopped,) = await simulated(after_stop, "--reply", "wait=STOP@5m")
    assert (stopped["path"], stopped["outcome"]) == (["send", "wait", "sorry"], "opted_out")
    assert [m["step"] for m in stopped["messages"]] == ["send"]  # STOP suppressed the contact: no "sorry"
    (late,) = await simulated(after_stop, "--reply", "wait=STOP@2h")  # the wait timed out first: no opt-out
    assert (late["outcome"], [m["step"] for m in late["messages"]]) == ("completed", ["send", "sorry"])


async def test_a_stop_while_the_message_before_the_wait_is_held_takes_the_waits_edge(
    tmp_path: Path, settings: Settings
) -> None:
    """A STOP during quiet hours, while `send` (right before `wait`) holds its message, counts for `wait` as the
    same STOP in `wait` does: the owner is told at once, the customer gets nothing more (not the held message
    either)."""
    now = datetime.now(UTC)
    window = f"{now - timedelta(hours=1):%H:%M}-{now + timedelta(hours=1):%H:%M}"
    file = tmp_path / "stop.toml"
    file.write_text(
        campaign_toml("stop", workflow=f'[delivery]\nquiet_hours = "{window}"\n\n' + STOP_THEN_TELL), encoding="utf-8"
    )
    campaign, problems = load_campaign(file)
    assert campaign is not None, problems
    plans = [
        ([], SimulationPlan(replies=[PlannedReply(step=step, text="STOP", after=after, opt_out=True)]))
        for step, after in (("send", timedelta(minutes=10)), ("wait", timedelta(0)))
    ]
    customer = {"id": "c1", "name": "Ada", "phone": "+12125550100", "timezone": "UTC"}
    held, waiting = await simulate(campaign, settings, plans, customer=customer, cart={})
    for run in (held, waiting):
        assert (run.path, run.outcome) == (["send", "wait", "owner", "sorry"], "opted_out")
        assert run.events[1:] == ["condition_not_satisfied", "condition_satisfied", "condition_not_satisfied"]
    assert [m.step for m in held.messages] == ["owner"]
    assert [m.step for m in waiting.messages] == ["send", "owner"]
    # The STOP ends the hold: the owner hears of it at once, not when the quiet hours end an hour later.
    assert held.messages[0].at - now < timedelta(minutes=30), held.messages[0].at


AWAIT_THEN_EMAIL = """\
[workflow]
start_step = "sms"

[workflow.steps.sms]
node = "send_message"
params = { channel = "http", await_delivery = "2m", template = "Hi {{ customer.name }}" }
condition = { satisfied = "wait", not_satisfied = "email" }

[workflow.steps.wait]
node = "explicit_wait"
params = { duration = "1h" }

[workflow.steps.email]
node = "send_message"
params = { channel = ["http", "console"], template = "Hi {{ customer.name }}, by mail" }
"""


async def test_await_delivery_simulates_delivered_and_undelivered_receipts(tmp_path: Path) -> None:
    """Without `--all-paths` the SMS is delivered (no 2m wait); with it, also undelivered, which takes the other
    edge. Nothing waits for a receipt in vain: the simulated clock moves only by the 1h wait."""
    campaign = tmp_path / "receipts.toml"
    campaign.write_text(campaign_toml("receipts", workflow=AWAIT_THEN_EMAIL), encoding="utf-8")
    gateway = {"SCHEDULER_CHANNELS__HTTP__URL": "http://127.0.0.1:9/v1/messages"}  # never called: captured
    run = await scheduler("simulate", campaign, "--json", env=gateway)
    assert run.code == 0, run
    (path,) = json.loads(run.stdout)
    assert path["path"] == ["sms", "wait"]
    assert path["steps"][0]["delivery"] == {"status": "delivered", "channel": "simulation"}

    run = await scheduler("simulate", campaign, "--all-paths", "--json", env=gateway)
    assert run.code == 0, run
    delivered, undelivered = json.loads(run.stdout)
    assert (delivered["choices"], delivered["path"]) == (["sms=delivered"], ["sms", "wait"])
    assert (undelivered["choices"], undelivered["path"]) == (["sms=undelivered"], ["sms", "email"])
    sms, email = undelivered["steps"]
    assert (sms["reason"], sms["delivery"]["status"]) == ("undelivered", "undelivered")
    assert (email["tried"], email["channel"]) == (["http"], "http")
    sent = [datetime.fromisoformat(m["at"]) for m in undelivered["messages"]]
    assert sent[1] - sent[0] < timedelta(seconds=5)
