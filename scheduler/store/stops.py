"""The campaigns' emergency stops as the store keeps them; stopping a campaign is `scheduler.campaigns.stop`."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import func, insert, select

from scheduler.store import MAX_REASON, Store, campaign_stops, stored_utc


class StopMode(StrEnum):
    CANCEL = "cancel"
    """Cancel every running flow of the campaign."""
    DRAIN = "drain"
    """Let the running flows finish."""


class CampaignStops:
    """The stops in the store. Synchronous: async callers use `asyncio.to_thread`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def record(self, campaign_id: str, *, mode: StopMode, reason: str, by: str, at: datetime | None = None) -> datetime:
        """Write down a stop (at `at`, default now); the instant it counts from."""
        at = at or datetime.now(UTC)
        row = {"campaign_id": campaign_id, "mode": mode.value, "reason": reason[:MAX_REASON], "by": by[:64], "at": at}
        with self.store.engine.begin() as connection:
            connection.execute(insert(campaign_stops).values(row))
        return at

    def barred_before(self, campaign_id: str) -> datetime | None:
        """The latest `cancel` stop of the campaign: its flows started before then send nothing more."""
        query = select(func.max(campaign_stops.c.at)).where(
            campaign_stops.c.campaign_id == campaign_id, campaign_stops.c.mode == StopMode.CANCEL.value
        )
        with self.store.engine.connect() as connection:
            at = connection.execute(query).scalar_one_or_none()
        return None if at is None else stored_utc(at)
