"""The reconcile loop (`scheduler up`, `scheduler api --reconcile`) against the real dev server.

Unlike `apply`, a broken file does not hold back the others, and only campaigns the loop loaded
before are pruned. Campaign ids, directory and task queue are the test's own (see test_schedules).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from scheduler.campaigns.campaign import Campaign, load_campaign_dir
from scheduler.campaigns.reconcile import Reconciler, sync
from scheduler.campaigns.schedules import Action, describe
from scheduler.flow.attributes import CAMPAIGN_SHA256
from scheduler.problems import Problem
from tests.helpers.campaigns import BROKEN_LINE, campaign_toml
from tests.helpers.schedules import Campaigns, changes_of, create_foreign_schedule, listed_sha_is, sha_is, wait_listed
from tests.helpers.waiting import eventually


async def test_reconciler_run_once_creates_then_updates(campaigns: Campaigns) -> None:
    c = campaigns
    c.write("a", cron=["0 9 * * *"])
    c.write("b", enabled=False)
    reconciler = Reconciler(c.client, c.settings)

    first = await reconciler.run_once()

    assert changes_of(first) == [(Action.CREATE, c.id("a")), (Action.CREATE, c.id("b"))]
    assert reconciler.last is first
    assert first.problems == []
    assert (await c.describe("b")).schedule.state.paused

    c.write("a", cron=["30 7 * * *"])
    second = await reconciler.run_once()

    assert changes_of(second) == [(Action.UPDATE, c.id("a")), (Action.UNCHANGED, c.id("b"))]
    (calendar,) = (await c.describe("a")).schedule.spec.calendars
    assert [(r.start, r.end) for r in calendar.hour] == [(7, 7)]
    await eventually(lambda: sha_is(c, "a", c.sha("a")))


async def test_reconciler_prunes_only_campaigns_it_loaded(campaigns: Campaigns, tmp_path: Path) -> None:
    c = campaigns
    c.write("mine")
    c.write("kept")
    reconciler = Reconciler(c.client, c.settings)
    await reconciler.run_once()
    # "another apply", from a directory this reconciler never loaded.
    other_dir = tmp_path / "elsewhere"
    other_dir.mkdir()
    c.owned.add(c.sid("other"))
    (other_dir / "other.toml").write_text(campaign_toml(c.id("other")), encoding="utf-8")
    other = c.settings.model_copy(deep=True)
    other.campaigns.dir = other_dir
    assert changes_of(await sync(c.client, other)) == [(Action.CREATE, c.id("other"))]
    await wait_listed(c.client, c.sid("mine"), c.sid("kept"), c.sid("other"))

    c.path("mine").unlink()
    outcome = await reconciler.run_once()

    assert changes_of(outcome) == [(Action.UNCHANGED, c.id("kept")), (Action.DELETE, c.id("mine"))]
    assert await describe(c.client, c.sid("mine")) is None
    assert await describe(c.client, c.sid("kept")) is not None
    assert await describe(c.client, c.sid("other")) is not None


async def test_reconciler_broken_file_keeps_last_good_state_and_prunes_nothing(campaigns: Campaigns) -> None:
    c = campaigns
    c.write("good", cron=["0 9 * * *"])
    c.write("broken", cron=["0 9 * * *"])
    c.write("gone")
    reconciler = Reconciler(c.client, c.settings)
    await reconciler.run_once()
    broken_sha = c.sha("broken")
    for name in ("good", "broken", "gone"):
        await eventually(lambda name=name: listed_sha_is(c, name, c.sha(name)))  # type: ignore[misc]

    c.write("good", cron=["0 10 * * *"])
    path = c.write_broken("broken")
    c.path("gone").unlink()
    outcome = await reconciler.run_once()

    assert changes_of(outcome) == [(Action.UPDATE, c.id("good"))]
    assert reconciler.last is outcome
    (error,) = outcome.errors
    assert (Path(error.path), error.line, error.key) == (path, BROKEN_LINE, "workflow.steps.a.node")
    (calendar,) = (await c.describe("good")).schedule.spec.calendars
    assert [(r.start, r.end) for r in calendar.hour] == [(10, 10)]
    broken = await c.describe("broken")
    assert broken.typed_search_attributes.get(CAMPAIGN_SHA256) == broken_sha
    assert [[(r.start, r.end) for r in cal.hour] for cal in broken.schedule.spec.calendars] == [[(9, 9)]]
    assert await describe(c.client, c.sid("gone")) is not None

    # Fixed: the loop prunes again.
    c.write("broken", cron=["0 9 * * *"])
    fixed = await reconciler.run_once()
    assert fixed.problems == []
    assert changes_of(fixed) == [
        (Action.UNCHANGED, c.id("broken")),
        (Action.DELETE, c.id("gone")),
        (Action.UNCHANGED, c.id("good")),
    ]
    assert await describe(c.client, c.sid("gone")) is None


async def test_reconciler_start_picks_up_new_file(campaigns: Campaigns) -> None:
    c = campaigns
    c.write("first")
    c.settings.campaigns.reconcile_every = timedelta(seconds=1)
    reconciler = Reconciler(c.client, c.settings)
    reconciler.start()
    try:

        async def ran_once() -> None:
            assert reconciler.last is not None
            assert await describe(c.client, c.sid("first")) is not None

        await eventually(ran_once, timeout=5)
        c.write("second", cron=["0 6 * * *"])

        async def created() -> None:
            assert await describe(c.client, c.sid("second")) is not None

        await eventually(created, timeout=5)
    finally:
        reconciler.stop()


async def test_reconciler_schedule_id_taken_by_someone_else_does_not_hold_back_others(campaigns: Campaigns) -> None:
    c = campaigns
    c.owned.add(c.sid("taken"))
    await create_foreign_schedule(c.client, c.sid("taken"))
    taken = c.write("taken")
    c.write("free")
    reconciler = Reconciler(c.client, c.settings)

    outcome = await reconciler.run_once()

    assert changes_of(outcome) == [(Action.CREATE, c.id("free"))]
    (error,) = outcome.errors
    line = taken.read_text(encoding="utf-8").splitlines().index(f'id = "{c.id("taken")}"') + 1
    assert (Path(error.path), error.line, error.key) == (taken, line, "campaign.id")
    assert f"schedule {c.sid('taken')!r} exists but was not created by this tool" in error.message
    assert await describe(c.client, c.sid("free")) is not None
    foreign = await c.describe("taken")
    assert (foreign.schedule.state.note, await foreign.memo()) == ("made by hand", {})


async def test_reconciler_campaign_temporal_refuses_does_not_hold_back_others(
    campaigns: Campaigns, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = campaigns
    c.write("good")
    c.write("huge")
    loaded, _ = load_campaign_dir(c.settings.campaigns.dir)
    huge = loaded[c.id("huge")]
    # Over Temporal's 2 MB payload limit: no file can do this (files are capped at 1 MB), a bug might.
    loaded[huge.id] = huge.model_copy(update={"campaign": huge.campaign.model_copy(update={"name": "x" * 3_000_000})})

    async def load(settings: object) -> tuple[dict[str, Campaign], list[Problem]]:
        return loaded, []

    monkeypatch.setattr("scheduler.campaigns.reconcile.load_campaigns", load)
    outcome = await Reconciler(c.client, c.settings).run_once()

    (error,) = outcome.errors
    assert (Path(error.path).name, error.key) == ("huge.toml", "campaign.id")
    assert error.message.startswith("Temporal refused: ")
    assert await describe(c.client, c.sid("good")) is not None
    assert await describe(c.client, c.sid("huge")) is None
