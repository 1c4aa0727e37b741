"""Campaign ↔ Temporal Schedule: the spec a campaign's `[schedule]` becomes, plan, apply, status."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from temporalio.client import ScheduleSpec

from scheduler.campaign import CampaignSchedule


def _utc(moment: datetime | None, timezone: str) -> datetime | None:
    """A TOML local datetime is read in the campaign's timezone; Temporal wants an aware instant."""
    if moment is None:
        return None
    aware = moment if moment.tzinfo else moment.replace(tzinfo=ZoneInfo(timezone))
    return aware.astimezone(UTC)


def schedule_spec(schedule: CampaignSchedule) -> ScheduleSpec:
    """The Temporal spec of a campaign's `[schedule]` (cron strings as written; the server parses them)."""
    return ScheduleSpec(
        cron_expressions=list(schedule.cron),
        time_zone_name=schedule.timezone,
        jitter=schedule.jitter or None,
        start_at=_utc(schedule.start_at, schedule.timezone),
        end_at=_utc(schedule.end_at, schedule.timezone),
    )
