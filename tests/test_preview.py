"""Parity of `preview` with the Temporal dev server: the server's next action times are the truth.

Each case becomes a paused schedule whose start_at lies years ahead, so the server's `next_action_times` (the next
ten, computed from now but never before start_at) can be compared with `preview` from now. DST cases start just
before a transition in America/New_York, Europe/Berlin and two odder zones (a 30-minute shift, a midnight shift).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from temporalio.client import Client, Schedule, ScheduleActionStartWorkflow, ScheduleState
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from scheduler.campaigns.campaign import CampaignSchedule
from scheduler.campaigns.cron import cron_problem, preview
from scheduler.campaigns.schedules import schedule_spec

NY, BERLIN, UTC_ZONE = "America/New_York", "Europe/Berlin", "UTC"
SPRING = datetime(2031, 3, 1)


@dataclass(frozen=True)
class Case:
    id: str
    cron: tuple[str, ...]
    timezone: str = UTC_ZONE
    start_at: datetime = SPRING
    end_at: datetime | None = None


CORPUS = [
    Case("hourly", ("0 * * * *",)),
    Case("business-hours-ny", ("*/15 9-17 * * MON-FRI",), NY),
    Case("weekdays-berlin", ("0 9 * * 1-5",), BERLIN),
    Case("dom-and-dow-friday-13th", ("0 0 13 * FRI",)),
    Case("dom-and-dow-names", ("0 0 1 JUL,AUG WED",), BERLIN),
    Case("dom-range-and-dow", ("0 6 1-7 * MON",), NY),
    Case("sunday-as-7", ("0 9 * * 7",), NY),
    Case("sunday-as-0", ("0 9 * * 0",), NY),
    Case("weekend-5-7", ("0 9 * * 5-7",)),
    Case("dow-1-7-step-2", ("0 9 * * 1-7/2",)),
    Case("every-other-day-of-week", ("0 0 * * */2",)),
    Case("named-months", ("0 12 1 JAN,JUL *",), BERLIN),
    Case("long-and-lowercase-names", ("0 8 * january-mar tues,thurs",)),
    Case("two-letter-days", ("0 8 * * mo-we",)),
    Case("start-slash-step", ("5/20 * * * *",)),
    Case("range-step", ("0 1-5/2 * * *",), BERLIN),
    Case("every-90m", ("@every 90m",), BERLIN),
    Case("every-1h-phase-15m", ("@every 1h/15m",), NY),
    Case("every-1d-phase-9h", ("@every 1d/9h",), NY),
    Case("daily", ("@daily",), BERLIN),
    Case("weekly", ("@weekly",), NY),
    Case("monthly", ("@monthly",)),
    Case("yearly", ("@yearly",), BERLIN),
    Case("leap-day", ("0 0 29 2 *",)),
    Case("never-feb-31", ("0 0 31 2 *",)),
    Case("multiple-merged", ("0 9 * * MON-FRI", "0 12 * * SAT,SUN"), BERLIN),
    Case("multiple-duplicates", ("0 9 * * *", "0 9 * * MON", "0 9 1 * *"), NY),
    Case("multiple-with-every", ("@every 6h", "0 */4 * * *", "30 1 * * *")),
    Case("end-at-inclusive", ("0 0 * * *",), BERLIN, end_at=datetime(2031, 3, 5)),
    Case("start-at-on-a-fire-time", ("0 0 * * *",), NY, start_at=datetime(2031, 3, 1)),
    Case("start-at-mid-hour", ("*/20 * * * *",), start_at=datetime(2031, 3, 1, 10, 7, 30)),
    # America/New_York springs forward 2031-03-09 02:00 -> 03:00 and falls back 2031-11-02 02:00 -> 01:00.
    Case("ny-gap-0230", ("30 2 * * *",), NY, datetime(2031, 3, 9)),
    Case("ny-gap-hours-1-3", ("0 1-3 * * *",), NY, datetime(2031, 3, 9)),
    Case("ny-gap-every-20m", ("*/20 2 * * *",), NY, datetime(2031, 3, 9)),
    Case("ny-gap-hourly-30", ("30 * * * *",), NY, datetime(2031, 3, 9)),
    Case("ny-repeat-0130", ("30 1 * * *",), NY, datetime(2031, 11, 2)),
    Case("ny-repeat-0130-sunday", ("30 1 * * SUN",), NY, datetime(2031, 11, 1)),
    Case("ny-repeat-hours-1-3", ("0 1-3 * * *",), NY, datetime(2031, 11, 2)),
    Case("ny-repeat-every-20m", ("*/20 1 * * *",), NY, datetime(2031, 11, 2)),
    Case("ny-repeat-hourly-30", ("30 * * * *",), NY, datetime(2031, 11, 2)),
    Case("ny-repeat-0-and-30", ("0,30 1 * * *",), NY, datetime(2031, 11, 2)),
    # Europe/Berlin springs forward 2031-03-30 02:00 -> 03:00 and falls back 2031-10-26 03:00 -> 02:00.
    Case("berlin-gap-0230", ("30 2 * * *",), BERLIN, datetime(2031, 3, 30)),
    Case("berlin-gap-hours-1-3", ("0 1-3 * * *",), BERLIN, datetime(2031, 3, 30)),
    Case("berlin-gap-every-20m", ("*/20 2 * * *",), BERLIN, datetime(2031, 3, 30)),
    Case("berlin-repeat-0230", ("30 2 * * *",), BERLIN, datetime(2031, 10, 26)),
    Case("berlin-repeat-hours-1-3", ("0 1-3 * * *",), BERLIN, datetime(2031, 10, 26)),
    Case("berlin-repeat-every-20m", ("*/20 2 * * *",), BERLIN, datetime(2031, 10, 26)),
    Case("berlin-repeat-hourly-30", ("30 * * * *",), BERLIN, datetime(2031, 10, 26)),
    Case("berlin-repeat-0-and-30", ("0,30 2 * * *",), BERLIN, datetime(2031, 10, 25, 23)),
    Case("berlin-repeat-sunday", ("30 2 * * SUN",), BERLIN, datetime(2031, 10, 20)),
    # Australia/Lord_Howe shifts by 30 minutes (2031-10-05 02:00 -> 02:30, 2031-04-06 02:00 -> 01:30).
    Case("lord-howe-gap", ("*/15 2 * * *",), "Australia/Lord_Howe", datetime(2031, 10, 5)),
    Case("lord-howe-repeat", ("*/15 1 * * *",), "Australia/Lord_Howe", datetime(2031, 4, 6)),
    # America/Santiago springs forward at midnight (2031-09-07 00:00 -> 01:00): a day without 00:00.
    Case("santiago-midnight-gap", ("0 0 * * *", "30 0 * * SUN"), "America/Santiago", datetime(2031, 9, 5)),
]


def _shown(times: list[datetime], timezone: str) -> list[str]:
    """Local and UTC side by side, so a failing comparison reads like a calendar."""
    zone = ZoneInfo(timezone)
    return [f"{t.astimezone(zone):%a %Y-%m-%d %H:%M %Z} = {t.astimezone(UTC):%H:%M}Z" for t in times]


async def _server_times(client: Client, schedule: CampaignSchedule, prefix: str) -> list[datetime]:
    """The server's next action times for `schedule`, from a paused schedule created and deleted here."""
    schedule_id = f"parity-{prefix}-{uuid.uuid4().hex[:8]}"
    handle = await client.create_schedule(
        schedule_id,
        Schedule(
            action=ScheduleActionStartWorkflow("NoSuchWorkflow", id=f"{schedule_id}-run", task_queue="parity-nothing"),
            spec=schedule_spec(schedule),
            state=ScheduleState(paused=True),
        ),
    )
    try:
        return list((await handle.describe()).info.next_action_times)
    finally:
        await handle.delete()


def test_corpus_is_valid_campaign_cron() -> None:
    """Every corpus expression passes cron_problem, so the parity covers what campaign files may contain."""
    assert [c.id for c in CORPUS for e in c.cron if cron_problem(e)] == []
    assert len({c.id for c in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize("case", CORPUS, ids=[c.id for c in CORPUS])
async def test_preview_matches_the_server(dev_env: WorkflowEnvironment, case: Case) -> None:
    schedule = CampaignSchedule(
        cron=list(case.cron), timezone=case.timezone, start_at=case.start_at, end_at=case.end_at
    )
    server = await _server_times(dev_env.client, schedule, case.id)
    expected = preview(schedule, count=10, start=datetime.now(UTC))
    assert _shown(expected, case.timezone) == _shown(server, case.timezone)
    if case.id.startswith("never"):
        assert server == []
    elif case.end_at is None:
        assert len(server) == 10  # the comparison covered the full ten the server gives


async def test_temporal_drops_sunday_from_1_to_7(dev_env: WorkflowEnvironment) -> None:
    """Why cron_problem refuses '1-7' as day-of-week: the server reads it as Monday to Saturday."""
    expr = "0 9 * * 1-7"
    assert cron_problem(expr) is not None
    schedule = CampaignSchedule.model_construct(cron=[expr], timezone=UTC_ZONE, start_at=SPRING, end_at=None)
    server = await _server_times(dev_env.client, schedule, "dow-1-7")
    same = CampaignSchedule(cron=["0 9 * * 1-6"], start_at=SPRING)
    assert server == preview(same, count=10, start=datetime.now(UTC))
    assert all(t.weekday() != 6 for t in server)


@pytest.mark.parametrize(
    "expr",
    [
        "61 * * * *",
        "0 0 * 13 *",
        "22-2 * * * *",
        "0 0 * * MON-SUN",
        "5/ * * * *",
        "H * * * *",
        "0 0 1,,2 * *",
        "0 0 * ma *",
        "@every 1w",
        "@every 500ms",
        "@every 1h/1h",
        "@every  5m",
    ],
)
async def test_expressions_cron_problem_calls_invalid_are_refused_by_the_server(
    dev_env: WorkflowEnvironment, expr: str
) -> None:
    """cron_problem's own parser refuses what the server refuses (here: with an InvalidArgument error)."""
    assert cron_problem(expr) is not None
    schedule = CampaignSchedule.model_construct(cron=[expr], timezone=UTC_ZONE, start_at=SPRING, end_at=None)
    with pytest.raises(RPCError):
        await _server_times(dev_env.client, schedule, "refused")
