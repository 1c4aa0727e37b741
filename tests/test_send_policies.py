"""Send policies in real flows: quiet hours in the customer's local time (the time-skipping server jumps the
clock to the night and through the hold), and frequency caps across campaigns against the send ledger.

When a message went is read from the flow's history: the time its `send_message` activity was scheduled.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import pytest_asyncio
from prometheus_client import REGISTRY
from temporalio.api.enums.v1 import EventType as HistoryEventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from scheduler.campaigns.campaign import load_campaign
from scheduler.config import FrequencyCap, Settings, load_settings
from scheduler.delivery.channels import Outbox
from scheduler.errors import ConfigError
from scheduler.flow.definition import WorkflowDefinition, validate_definition
from scheduler.flow.models import DeliveryPolicy, FlowInput, FlowStatus, flow_input
from scheduler.flow.signals import CART_CONVERTED_SIGNAL, CLIENT_ANSWERED_SIGNAL, Conversion, Reply
from scheduler.temporal import ensure_search_attributes
from scheduler.worker import make_worker
from tests.helpers import BIN, ROOT
from tests.helpers.api import running_api
from tests.helpers.campaigns import JSONL_AUDIENCE, ONE_STEP, campaign_toml
from tests.helpers.flows import start_flow_input, status
from tests.helpers.schedules import Campaigns, terminate_flows
from tests.helpers.servers import scripted_server
from tests.helpers.waiting import eventually


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def clock() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server of this module's own: its tests move the clock months ahead (to DST changes)."""
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter, test_server_existing_path=str(BIN / "temporal-test-server")
    )
    try:
        await ensure_search_attributes(env.client, env.client.namespace)
        yield env
    finally:
        await env.shutdown()


NEW_YORK = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
PHONE_NY = "+1 212 555 0142"
TCPA = "21:00-08:00"


def send_or_tell_owner(*, exit_on_conversion: bool = False) -> WorkflowDefinition:
    """A message; if it is not sent, the owner is told instead."""
    return WorkflowDefinition.model_validate(
        {
            "start_step": "send",
            "exit_on": ["cart-converted"] if exit_on_conversion else [],
            "steps": {
                "send": {"node": "send_message", "condition": {"satisfied": "done", "not_satisfied": "owner"}},
                "done": {"node": "explicit_wait", "params": {"duration": "1s"}},
                "owner": {"node": "notify_creator"},
            },
        }
    )


def flow_of(customer: dict[str, Any], *, exit_on_conversion: bool = False, **policy: Any) -> FlowInput:
    return FlowInput(
        definition=send_or_tell_owner(exit_on_conversion=exit_on_conversion),
        campaign_id="quiet",
        owner="growth@example.com",
        customer=customer,
        delivery=DeliveryPolicy(**policy),
    )


async def skip_to(env: WorkflowEnvironment, zone: ZoneInfo, wall: time, *, on: datetime | None = None) -> datetime:
    """Move the test server's clock to the next `wall` time in `zone` (on local date `on`, if given); that instant."""
    now = await env.get_current_time()
    day = (on or now.astimezone(zone)).date()
    target = datetime.combine(day, wall, tzinfo=zone)
    while target <= now:
        assert on is None, f"{target} is in the past of the test server ({now})"
        day += timedelta(days=1)
        target = datetime.combine(day, wall, tzinfo=zone)
    await env.sleep(target - now)
    return target


async def sent_at(handle: WorkflowHandle[Any, Any], activity: str = "send_message") -> list[datetime]:
    """When each `activity` of the flow was scheduled, in UTC."""
    times = []
    async for event in handle.fetch_history_events():
        if event.event_type == HistoryEventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            if event.activity_task_scheduled_event_attributes.activity_type.name == activity:
                times.append(event.event_time.ToDatetime(tzinfo=UTC))
    return times


async def run(
    env: WorkflowEnvironment, flow: FlowInput, settings: Settings, task_queue: str
) -> tuple[WorkflowHandle[Any, FlowStatus], FlowStatus]:
    async with make_worker(env.client, settings, task_queue=task_queue):
        handle = await start_flow_input(env.client, flow, task_queue)
        return handle, await asyncio.wait_for(handle.result(), timeout=60)


async def send_step(handle: WorkflowHandle[Any, Any]) -> dict[str, Any]:
    """The memo entry of the flow's `send` step (its first)."""
    steps: list[dict[str, Any]] = await (await handle.describe()).memo_value("steps", type_hint=list)
    return steps[0]


def counted(result: str, channel: str = "console") -> float:
    """`scheduler_messages_total` of this process (the tests' workers run in it)."""
    return REGISTRY.get_sample_value("scheduler_messages_total", {"channel": channel, "result": result}) or 0.0


def near(moment: datetime, expected: datetime) -> bool:
    """Within the second (the server's clock moves on while the worker runs the step)."""
    return abs(moment - expected) < timedelta(seconds=1)


async def test_a_message_due_at_night_in_new_york_goes_at_eight_the_next_morning(
    clock: WorkflowEnvironment, settings: Settings, task_queue: str
) -> None:
    start = await skip_to(clock, NEW_YORK, time(23, 30))
    flow = flow_of({"id": "c1", "phone": PHONE_NY}, quiet_hours=TCPA, timezone="Asia/Tokyo")
    held_before, sent_before = counted("held"), counted("sent")
    async with make_worker(clock.client, settings, task_queue=task_queue):
        handle = await start_flow_input(clock.client, flow, task_queue)
        eight = datetime.combine(start.date() + timedelta(days=1), time(8), tzinfo=NEW_YORK)

        async def held() -> None:
            assert (await status(handle)).waiting_until == eight.astimezone(UTC)

        await eventually(held)  # the clock stands still until the result is awaited
        assert Outbox(settings.channels.outbox).read() == []
        result = await asyncio.wait_for(handle.result(), timeout=60)
    assert (result.outcome, result.path, result.waiting_until) == ("completed", ["send", "done"], None)
    assert (counted("held") - held_before, counted("sent") - sent_before) == (1, 1)
    [sent] = await sent_at(handle)
    assert near(sent, eight.astimezone(UTC)), (sent, eight)
    send = await send_step(handle)
    assert send["zone"] == "phone: America/New_York"
    assert send["held_until"].startswith(eight.astimezone(UTC).strftime("%Y-%m-%dT%H:%M"))
    assert "reason" not in send


async def test_a_berlin_customer_at_7_59_gets_the_message_at_8(
    clock: WorkflowEnvironment, settings: Settings, task_queue: str
) -> None:
    start = await skip_to(clock, BERLIN, time(7, 59))
    flow = flow_of({"id": "c2", "phone": PHONE_NY, "timezone": "Europe/Berlin"}, quiet_hours=TCPA)
    handle, result = await run(clock, flow, settings, task_queue)
    assert result.outcome == "completed"
    [sent] = await sent_at(handle)
    assert near(sent, start.replace(minute=0, hour=8).astimezone(UTC))
    send = await send_step(handle)
    assert send["zone"] == "customer.timezone: Europe/Berlin"


async def test_a_message_in_the_day_goes_at_once(
    clock: WorkflowEnvironment, settings: Settings, task_queue: str
) -> None:
    start = await skip_to(clock, NEW_YORK, time(12, 0))
    handle, result = await run(clock, flow_of({"id": "c3", "phone": PHONE_NY}, quiet_hours=TCPA), settings, task_queue)
    assert result.outcome == "completed"
    [sent] = await sent_at(handle)
    assert near(sent, start.astimezone(UTC))
    send = await send_step(handle)
    assert "held_until" not in send


async def test_without_a_phone_or_timezone_the_campaign_timezone_counts(
    clock: WorkflowEnvironment, settings: Settings, task_queue: str
) -> None:
    tokyo = ZoneInfo("Asia/Tokyo")
    start = await skip_to(clock, tokyo, time(22, 0))
    flow = flow_of({"id": "c4", "email": "ada@example.net"}, quiet_hours=TCPA, timezone="Asia/Tokyo")
    handle, result = await run(clock, flow, settings, task_queue)
    assert result.outcome == "completed"
    [sent] = await sent_at(handle)
    assert near(sent, datetime.combine(start.date() + timedelta(days=1), time(8), tzinfo=tokyo).astimezone(UTC))
    send = await send_step(handle)
    assert send["zone"] == "campaign timezone: Asia/Tokyo"


async def test_a_hold_longer_than_max_delay_sends_nothing_and_takes_the_not_satisfied_branch(
    clock: WorkflowEnvironment, settings: Settings, task_queue: str
) -> None:
    await skip_to(clock, NEW_YORK, time(23, 30))
    flow = flow_of({"id": "c5", "phone": PHONE_NY}, quiet_hours=TCPA, max_delay=timedelta(hours=1))
    skipped_before = counted("skipped_quiet_hours")
    handle, result = await run(clock, flow, settings, task_queue)
    assert (result.outcome, result.path) == ("completed", ["send", "owner"])
    assert await sent_at(handle) == []
    assert [m["to"] for m in Outbox(settings.channels.outbox).read()] == ["growth@example.com"]
    send = await send_step(handle)
    assert (send["event"], send["reason"]) == ("condition_not_satisfied", "quiet_hours")
    assert counted("skipped_quiet_hours") - skipped_before == 1


async def test_a_conversion_during_the_hold_ends_the_flow(
    clock: WorkflowEnvironment, settings: Settings, task_queue: str
) -> None:
    await skip_to(clock, NEW_YORK, time(23, 30))
    flow = flow_of({"id": "c6", "phone": PHONE_NY}, exit_on_conversion=True, quiet_hours=TCPA)
    async with make_worker(clock.client, settings, task_queue=task_queue):
        handle = await start_flow_input(clock.client, flow, task_queue)

        async def held() -> None:
            assert (await status(handle)).waiting_until is not None

        await eventually(held)
        await handle.signal(CART_CONVERTED_SIGNAL, Conversion(conversion_id="o1"))
        result = await asyncio.wait_for(handle.result(), timeout=60)
    assert (result.outcome, result.path) == ("converted", [])
    assert await sent_at(handle) == []


async def test_an_opt_out_during_the_hold_ends_the_flow_opted_out(
    clock: WorkflowEnvironment, settings: Settings, task_queue: str
) -> None:
    await skip_to(clock, NEW_YORK, time(23, 30))
    flow = flow_of({"id": "c11", "phone": PHONE_NY}, quiet_hours=TCPA)
    async with make_worker(clock.client, settings, task_queue=task_queue):
        handle = await start_flow_input(clock.client, flow, task_queue)

        async def held() -> None:
            assert (await status(handle)).waiting_until is not None

        await eventually(held)
        await handle.signal(CLIENT_ANSWERED_SIGNAL, Reply(reply_id="r1", text="STOP", opt_out=True))
        result = await asyncio.wait_for(handle.result(), timeout=60)
    assert (result.outcome, result.path) == ("opted_out", [])
    assert await sent_at(handle) == []


async def test_a_number_whose_area_code_spans_two_zones_waits_for_the_later_one(
    clock: WorkflowEnvironment, settings: Settings, task_queue: str
) -> None:
    """Idaho's 208 covers Boise (Mountain time) and the panhandle (Pacific): 08:00 in Los Angeles, an hour after
    Boise's."""
    los_angeles = ZoneInfo("America/Los_Angeles")
    start = await skip_to(clock, los_angeles, time(6, 30))
    handle, result = await run(
        clock, flow_of({"id": "c12", "phone": "+1 208 555 0142"}, quiet_hours=TCPA), settings, task_queue
    )
    assert result.outcome == "completed"
    [sent] = await sent_at(handle)
    assert near(sent, start.replace(hour=8, minute=0).astimezone(UTC))
    send = await send_step(handle)
    assert send["zone"] == "phone: America/Boise, America/Los_Angeles"


async def test_service_quiet_hours_reach_flows_whose_campaign_sets_none(
    clock: WorkflowEnvironment, settings: Settings, task_queue: str
) -> None:
    """`quiet_hours = None` in the flow's policy: the worker's `compliance.quiet_hours` counts."""
    start = await skip_to(clock, NEW_YORK, time(23, 30))
    settings.compliance.quiet_hours = TCPA
    handle, result = await run(clock, flow_of({"id": "c7", "phone": PHONE_NY}), settings, task_queue)
    assert result.outcome == "completed"
    [sent] = await sent_at(handle)
    assert near(sent, datetime.combine(start.date() + timedelta(days=1), time(8), tzinfo=NEW_YORK).astimezone(UTC))


async def test_flows_without_a_policy_send_at_once(
    clock: WorkflowEnvironment, settings: Settings, task_queue: str
) -> None:
    """A flow started before policies existed (no `delivery` in its input) keeps running without them."""
    start = await skip_to(clock, NEW_YORK, time(23, 30))
    settings.compliance.quiet_hours = TCPA
    flow = flow_of({"id": "c8", "phone": PHONE_NY}).model_copy(update={"delivery": None})
    handle, result = await run(clock, flow, settings, task_queue)
    assert result.outcome == "completed"
    [sent] = await sent_at(handle)
    assert near(sent, start.astimezone(UTC))


def next_dst_change(zone: ZoneInfo, after: datetime, *, forward: bool) -> datetime:
    """The local date (as midnight) of the next day on which `zone`'s clocks go forward (or back)."""
    day = after.astimezone(zone).date() + timedelta(days=1)
    for _ in range(400):
        before = datetime.combine(day, time(0), tzinfo=zone).utcoffset()
        later = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone).utcoffset()
        assert before is not None and later is not None
        if later != before and (later > before) == forward:
            return datetime.combine(day, time(0))
        day += timedelta(days=1)
    raise AssertionError(f"{zone} changes no clocks")


async def test_a_window_ending_in_the_spring_dst_gap_ends_when_the_clocks_jump(
    clock: WorkflowEnvironment, settings: Settings, task_queue: str
) -> None:
    """21:00-02:30 on the night New York jumps from 02:00 to 03:00: 02:30 never comes, the message goes at 03:00."""
    change = next_dst_change(NEW_YORK, await clock.get_current_time(), forward=True)
    await skip_to(clock, NEW_YORK, time(23, 0), on=change - timedelta(days=1))
    flow = flow_of({"id": "c9", "phone": PHONE_NY}, quiet_hours="21:00-02:30")
    handle, result = await run(clock, flow, settings, task_queue)
    assert result.outcome == "completed"
    [sent] = await sent_at(handle)
    assert near(sent, datetime.combine(change.date(), time(3), tzinfo=NEW_YORK).astimezone(UTC))
    assert sent.hour == 7  # 03:00 EDT


async def test_a_window_ending_in_the_repeated_autumn_hour_ends_at_its_first_occurrence(
    clock: WorkflowEnvironment, settings: Settings, task_queue: str
) -> None:
    """21:00-01:30 on the night New York repeats 01:00-02:00: the message goes at the first 01:30, once."""
    change = next_dst_change(NEW_YORK, await clock.get_current_time(), forward=False)
    await skip_to(clock, NEW_YORK, time(23, 0), on=change - timedelta(days=1))
    flow = flow_of({"id": "c10", "phone": PHONE_NY}, quiet_hours="21:00-01:30")
    handle, result = await run(clock, flow, settings, task_queue)
    assert result.outcome == "completed"
    [sent] = await sent_at(handle)
    first = datetime.combine(change.date(), time(1, 30, fold=0), tzinfo=NEW_YORK).astimezone(UTC)
    assert near(sent, first)
    assert sent.hour == 5  # 01:30 EDT, not 01:30 EST an hour later


# Frequency caps
#
# The time-skipping server jumps years ahead whenever a result is awaited with nothing else to wait for,
# while the ledger counts by the later of the worker's and the server's clocks: the flows of one test send
# with the clock standing still (`sent_step`), and results are awaited last.


def caps(settings: Settings, *, max: int, per: str, channels: tuple[str, ...] = ("console",)) -> None:
    settings.compliance.frequency_caps = [FrequencyCap.model_validate({"channels": channels, "max": max, "per": per})]


def sent_to(settings: Settings, phone: str) -> list[str]:
    """Campaigns whose flows messaged `phone`, in order (the outbox)."""
    return [m["campaign_id"] for m in Outbox(settings.channels.outbox).read() if m["to"] == phone]


async def start_sending(
    env: WorkflowEnvironment, task_queue: str, campaign: str, *, held: bool = False, **policy: Any
) -> WorkflowHandle[Any, FlowStatus]:
    """A flow of `campaign` messaging PHONE_NY, once its `send` step is over (sent or not), or `held`."""
    flow = flow_of({"id": "c1", "phone": PHONE_NY}, quiet_hours="", **policy).model_copy(
        update={"campaign_id": campaign}
    )
    handle = await start_flow_input(env.client, flow, task_queue)

    async def sent_step() -> None:
        now = await status(handle)
        assert now.waiting_until is not None if held else now.path[:1] == ["send"]

    await eventually(sent_step)
    return handle


async def finish(handles: list[WorkflowHandle[Any, FlowStatus]]) -> list[FlowStatus]:
    """Their results, one at a time (the time-skipping server refuses concurrent waits). Every test ends its
    flows while its worker runs: a flow left with a timer and no worker stops the clock for the next test."""
    return [await asyncio.wait_for(h.result(), timeout=60) for h in handles]


async def reason_of(handle: WorkflowHandle[Any, Any]) -> str | None:
    return (await send_step(handle)).get("reason")


async def test_a_cap_across_campaigns_lets_two_messages_through_and_the_third_branches(
    clock: WorkflowEnvironment, settings: Settings, task_queue: str
) -> None:
    caps(settings, max=2, per="24h")
    skipped_before = counted("skipped_frequency_cap")
    async with make_worker(clock.client, settings, task_queue=task_queue):
        handles = [await start_sending(clock, task_queue, campaign) for campaign in ("a", "b", "c")]
        results = await finish(handles)
    assert [r.path for r in results] == [["send", "done"], ["send", "done"], ["send", "owner"]]
    assert sent_to(settings, PHONE_NY) == ["a", "b"]
    assert [await reason_of(h) for h in handles] == [None, None, "frequency_cap"]
    assert counted("skipped_frequency_cap") - skipped_before == 1


async def test_transactional_campaigns_neither_count_nor_get_capped(
    clock: WorkflowEnvironment, settings: Settings, task_queue: str
) -> None:
    caps(settings, max=1, per="24h")
    async with make_worker(clock.client, settings, task_queue=task_queue):
        handles = [
            await start_sending(clock, task_queue, campaign, frequency_capped=capped)
            for campaign, capped in (("receipts", False), ("nudge", True), ("receipts", False), ("nudge", True))
        ]
        await finish(handles)
    assert sent_to(settings, PHONE_NY) == ["receipts", "nudge", "receipts"]


async def test_twenty_flows_messaging_one_contact_at_once_under_max_1_deliver_one(
    clock: WorkflowEnvironment, settings: Settings, task_queue: str, store_url: str
) -> None:
    """Two workers, each with a store of its own (its own lock file handles, or PostgreSQL lock session), as
    two worker processes have."""
    caps(settings, max=1, per="24h")
    settings.store.url = store_url
    other = await Client.connect(
        clock.client.service_client.config.target_host, data_converter=pydantic_data_converter
    )  # a worker of its own needs a client of its own
    async with (
        make_worker(clock.client, settings, task_queue=task_queue),
        make_worker(other, settings, task_queue=task_queue),
    ):
        handles = await asyncio.gather(*(start_sending(clock, task_queue, f"k{i}") for i in range(20)))
        results = await finish(handles)
    assert sorted(r.path[-1] for r in results) == ["done"] + ["owner"] * 19
    assert len(sent_to(settings, PHONE_NY)) == 1


async def test_on_cap_delay_holds_the_message_until_the_window_frees(
    clock: WorkflowEnvironment, settings: Settings, task_queue: str
) -> None:
    caps(settings, max=1, per="1h")
    async with make_worker(clock.client, settings, task_queue=task_queue):
        first = await start_sending(clock, task_queue, "a")
        second = await start_sending(clock, task_queue, "b", held=True, on_cap="delay")
        result = await asyncio.wait_for(second.result(), timeout=60)
        await finish([first])
    assert result.path == ["send", "done"]
    [first_sent] = await sent_at(first)
    _, sent = await sent_at(second)  # tried and capped; tried again once the first message left the window
    assert first_sent + timedelta(hours=1) <= sent < first_sent + timedelta(hours=1, seconds=5), (first_sent, sent)
    assert await reason_of(second) is None
    assert sent_to(settings, PHONE_NY) == ["a", "b"]


async def test_on_cap_delay_past_max_delay_is_not_sent(
    clock: WorkflowEnvironment, settings: Settings, task_queue: str
) -> None:
    caps(settings, max=1, per="24h")
    async with make_worker(clock.client, settings, task_queue=task_queue):
        first = await start_sending(clock, task_queue, "a")
        second = await start_sending(clock, task_queue, "b", on_cap="delay", max_delay=timedelta(hours=2))
        result = await asyncio.wait_for(second.result(), timeout=60)
        await finish([first])
    assert result.path == ["send", "owner"]
    assert await reason_of(second) == "frequency_cap"
    assert sent_to(settings, PHONE_NY) == ["a"]


# On the dev server, through the API


async def test_the_api_holds_a_message_due_in_quiet_hours_and_sends_one_outside_them(
    campaigns: Campaigns, task_queue: str
) -> None:
    """Windows around the real time in UTC (the customers' zone): the campaign's own, the service's, none."""
    c, now = campaigns, datetime.now(UTC)
    around_now = f"{now - timedelta(hours=1):%H:%M}-{now + timedelta(hours=2):%H:%M}"
    later = f"{now + timedelta(hours=2):%H:%M}-{now + timedelta(hours=3):%H:%M}"
    for name, window in (("held", around_now), ("open", later), ("service", None)):
        text = campaign_toml(c.id(name))
        c.path(name).write_text(
            text + (f'\n[delivery]\nquiet_hours = "{window}"\n' if window else ""), encoding="utf-8"
        )
    c.settings.compliance.quiet_hours = around_now
    customer = {"id": "c1", "phone": PHONE_NY, "timezone": "UTC"}
    async with running_api(c.client, c.settings, task_queue) as api:
        started = {}
        for name in ("held", "open", "service"):
            response = await api.start(campaign=c.id(name), customer=customer)
            assert response.status_code == 200, response.text
            started[name] = response.json()["workflow_id"]

        async def open_sent() -> None:
            assert sent_to(c.settings, PHONE_NY) == [c.id("open")]

        await eventually(open_sent)
        for name in ("held", "service"):
            handle = c.client.get_workflow_handle(started[name])

            async def held(handle: WorkflowHandle[Any, Any] = handle) -> None:
                waiting = (await status(handle)).waiting_until
                assert waiting is not None and waiting.strftime("%H:%M") == f"{now + timedelta(hours=2):%H:%M}"

            await eventually(held)
            await handle.terminate("test cleanup")
    assert sent_to(c.settings, PHONE_NY) == [c.id("open")]


# The settings and campaign keys


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            'quiet_hours = "25:00-08:00"',
            "8: delivery.quiet_hours: quiet hours '25:00-08:00': expected 'HH:MM-HH:MM'",
        ),
        ('quiet_hours = "08:00-08:00"', "8: delivery.quiet_hours: quiet hours '08:00-08:00'"),
        ('max_delay = "8d"', "8: delivery.max_delay: max_delay must be between 0s and 7d"),
        ('on_cap = "queue"', "8: delivery.on_cap: Input should be 'skip' or 'delay'"),
        ('frequency_capped = "maybe"', "8: delivery.frequency_capped: Input should be a valid boolean"),
        ('quiet = "21:00-08:00"', "8: delivery.quiet: unknown key"),
    ],
)
def test_a_bad_delivery_table_is_a_problem_at_its_line(tmp_path: Path, table: str, message: str) -> None:
    path = tmp_path / "c.toml"
    text = campaign_toml("c")
    path.write_text(text.replace("\n[schedule]", f"\n[delivery]\n{table}\n\n[schedule]", 1), encoding="utf-8")
    campaign, problems = load_campaign(path)
    assert campaign is None
    first = problems[0]
    assert f"{first.line}: {first.key}: {first.message}".startswith(message), problems


def test_delivery_reaches_the_flows_a_campaign_starts(tmp_path: Path) -> None:
    """A file without `[delivery]` hashes as before (its schedule is unchanged); its flows get the service's
    window and the campaign's timezone; `[delivery]` overrides."""
    path = tmp_path / "c.toml"
    path.write_text(campaign_toml("c", timezone="Asia/Tokyo"), encoding="utf-8")
    plain, _ = load_campaign(path)
    assert plain is not None and plain.delivery is None
    assert "delivery" not in json.dumps(plain.model_dump(mode="json", exclude={"delivery"}))
    flow = flow_input(plain, quiet_hours=TCPA)
    assert flow.delivery == DeliveryPolicy(quiet_hours=TCPA, timezone="Asia/Tokyo")

    text = campaign_toml("c", timezone="Asia/Tokyo") + '\n[delivery]\nquiet_hours = ""\non_cap = "delay"\n'
    path.write_text(text, encoding="utf-8")
    own, problems = load_campaign(path)
    assert own is not None, problems
    assert own.sha256 != plain.sha256
    assert flow_input(own, quiet_hours=TCPA).delivery == DeliveryPolicy(
        quiet_hours="", timezone="Asia/Tokyo", on_cap="delay"
    )
    assert flow_input(own).delivery == flow_input(own, quiet_hours=TCPA).delivery
    assert flow_input(plain).delivery == DeliveryPolicy(quiet_hours=None, timezone="Asia/Tokyo")  # the flow asks


@pytest.mark.parametrize(
    ("compliance", "message"),
    [
        ('quiet_hours = "9pm-8am"', "compliance.quiet_hours: quiet hours '9pm-8am'"),
        (
            'frequency_caps = [{ channels = [], max = 3, per = "24h" }]',
            "compliance.frequency_caps.0.channels: name at least one channel",
        ),
        ('frequency_caps = [{ channels = ["sms"], max = 3, per = "24h" }]', "compliance.frequency_caps.0.channels.0"),
        ('frequency_caps = [{ channels = ["http"], max = 0, per = "24h" }]', "compliance.frequency_caps.0.max"),
        ('frequency_caps = [{ channels = ["http"], max = 3, per = "400d" }]', "compliance.frequency_caps.0.per"),
    ],
)
def test_bad_compliance_settings_are_one_clear_error(tmp_path: Path, compliance: str, message: str) -> None:
    path = tmp_path / "scheduler.toml"
    path.write_text(f"[compliance]\n{compliance}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_settings(path)
    assert message in str(raised.value), str(raised.value)


def test_the_shipped_config_holds_phone_messages_through_the_tcpa_window() -> None:
    settings = load_settings(ROOT / "config" / "scheduler.toml")
    assert settings.compliance.quiet_hours == TCPA
    assert settings.compliance.frequency_caps == []


async def test_a_runs_held_messages_are_counted_in_its_recent_runs(campaigns: Campaigns, task_queue: str) -> None:
    c, now = campaigns, datetime.now(NEW_YORK)
    around_now = f"{now - timedelta(hours=1):%H:%M}-{now + timedelta(hours=2):%H:%M}"
    rows = [{"cart_ref": f"k{i}", "mobile": f"+1 212 555 01{i:02d}", "name": f"N{i}"} for i in range(2)]
    (c.dir / "carts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    text = campaign_toml(c.id("r"), workflow=JSONL_AUDIENCE + ONE_STEP)
    c.path("r").write_text(text + f'\n[delivery]\nquiet_hours = "{around_now}"\n', encoding="utf-8")
    c.owned.add(c.sid("r"))
    await c.sync()
    try:
        async with running_api(c.client, c.settings, task_queue) as api:
            run = await c.run("r", 0)
            assert run["started"] == 2

            async def counted_in_recent_runs() -> None:
                response = await api.http.get(f"/schedules/{c.id('r')}")
                assert response.status_code == 200, response.text
                assert response.json()["recent_runs"][0]["messages"] == {"held": 2}

            await eventually(counted_in_recent_runs)
            listed = (await api.http.get("/schedules")).json()["schedules"]
            assert [s["recent_runs"][0]["messages"] for s in listed if s["campaign_id"] == c.id("r")] == [{"held": 2}]
            assert Outbox(c.settings.channels.outbox).read() == []
    finally:
        await terminate_flows(c.client, c.id("r"))


def test_send_message_branches_on_not_satisfied_without_a_warning() -> None:
    """A message a policy kept from going gives `condition_not_satisfied`: a condition on it is no mistake."""
    assert validate_definition(send_or_tell_owner()) == []
    timeout_edge = send_or_tell_owner().model_copy(deep=True)
    timeout_edge.steps["send"].condition.timeout = "owner"  # type: ignore[union-attr]
    [warning] = validate_definition(timeout_edge)
    assert (warning.key, warning.message, warning.warning) == (
        "steps.send.condition.timeout",
        "node 'send_message' never gives condition_timeout",
        True,
    )


async def test_a_delivery_that_fails_for_good_does_not_count_toward_the_cap(
    clock: WorkflowEnvironment, settings: Settings, task_queue: str
) -> None:
    caps(settings, max=1, per="24h", channels=("http", "console"))
    failing = WorkflowDefinition.model_validate(
        {
            "start_step": "send",
            "steps": {"send": {"node": "send_message", "params": {"channel": "http", "max_attempts": 2}}},
        }
    )
    with scripted_server("/messages") as gateway:
        gateway.statuses = [503]
        settings.channels.http.url = gateway.url
        async with make_worker(clock.client, settings, task_queue=task_queue):
            flow = flow_of({"id": "c1", "phone": PHONE_NY}, quiet_hours="").model_copy(update={"definition": failing})
            handle = await start_flow_input(clock.client, flow, task_queue)

            async def failed() -> None:  # not `result()`: that would let the clock jump past the cap's window
                assert (await handle.describe()).status == WorkflowExecutionStatus.FAILED

            await eventually(failed)
            assert len(gateway.requests) == 2  # both attempts reached the gateway, and failed
            after = await start_sending(clock, task_queue, "b")
            await finish([after])
    assert sent_to(settings, PHONE_NY) == ["b"]
