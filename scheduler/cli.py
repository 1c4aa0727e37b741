"""`scheduler …`: thin shell over the same functions the API uses. Exit 0 on success, 1 on error."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import getpass
import json
import logging
import os
import sys
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from scheduler.campaigns.campaign import (
    campaign_files,
    deep_checks,
    is_tests_file,
    load_campaign,
    load_campaign_files,
)
from scheduler.config import Settings, load_settings
from scheduler.errors import NoSchedule, SchedulerError
from scheduler.flow.signals import CLIENT_ANSWERED_SIGNAL
from scheduler.problems import Problem

app = typer.Typer(
    help="Marketing campaigns as durable Temporal workflows.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="Service config file [default: $SCHEDULER_CONFIG or config/scheduler.toml]"),
]


def _exit(code: int) -> NoReturn:
    """Exit with `code` even if the Temporal SDK's runtime would abort at interpreter exit (sdk-python#300)."""
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    _exit(1)


def _settings(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except SchedulerError as exc:
        _fail(str(exc))


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        return asyncio.run(coro)
    except SchedulerError as exc:
        _fail(str(exc))


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _serve(config: Path | None, *, dev_server: bool, worker: bool, api: bool, reconcile: bool) -> NoReturn:
    from scheduler.service import run

    settings = _settings(config)
    _logging()
    _run(run(settings, dev_server=dev_server, worker=worker, api=api, reconcile=reconcile))
    _exit(0)


@app.command()
def up(config: ConfigOpt = None) -> None:
    """Run everything: the Temporal dev server (when temporal.address is empty), the worker, the HTTP API
    and the reconcile loop that keeps schedules in step with the campaigns directory."""
    _serve(config, dev_server=True, worker=True, api=True, reconcile=True)


@app.command()
def worker(config: ConfigOpt = None) -> None:
    """Run only the worker, against the configured Temporal."""
    _serve(config, dev_server=False, worker=True, api=False, reconcile=False)


@app.command()
def api(
    reconcile: Annotated[
        bool, typer.Option("--reconcile", help="Also apply the campaigns directory on a timer")
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Run only the HTTP API, against the configured Temporal (one process with --reconcile at most)."""
    _serve(config, dev_server=False, worker=False, api=True, reconcile=reconcile)


PruneOpt = Annotated[bool, typer.Option("--prune", help="Delete managed schedules whose campaign file is gone")]


def _sync(config: Path | None, *, prune: bool, dry_run: bool) -> tuple[Any, dict[str, Any]]:
    """`plan` (dry_run) or `apply`, and the review of each update (`scheduler.campaigns.review`) by campaign id."""
    from scheduler.campaigns.reconcile import sync
    from scheduler.campaigns.review import reviews
    from scheduler.campaigns.schedules import Action
    from scheduler.campaigns.stop import pruned_note
    from scheduler.temporal import connect

    settings = _settings(config)

    async def go() -> tuple[Any, list[str | None], dict[str, Any]]:
        client = await connect(settings)
        result = await sync(client, settings, prune=prune, dry_run=dry_run)
        deleted = [c.campaign_id for c in result.changes if c.action == Action.DELETE]
        notes, reviewed = await asyncio.gather(
            asyncio.gather(*(pruned_note(client, cid) for cid in deleted)), reviews(client, result.changes)
        )
        return result, notes, reviewed

    result, notes, reviewed = _run(go())
    for p in result.problems:
        typer.echo(str(p), err=True)
    for note in filter(None, notes):
        typer.echo(note, err=True)
    if result.errors:
        typer.echo(f"{len(result.errors)} error(s): nothing was changed", err=True)
        _exit(1)
    for cid, r in reviewed.items():
        if r.flows.error:
            typer.echo(f"warning: flows in flight of {cid}: unavailable ({r.flows.error})", err=True)
    return result, reviewed


def _changes_text(changes: list[Any], reviewed: dict[str, Any]) -> None:
    """Each change on a line; under an update, its diff in words and its flows in flight."""
    for change in changes:
        typer.echo(str(change))
        if (r := reviewed.get(change.campaign_id)) is not None:
            for line in r.lines():
                typer.echo(line)


@app.command()
def plan(
    prune: PruneOpt = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the changes as JSON (an update with its diff and flows in flight)")
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Show what `apply` would change, and for each update the change in words and the flows it finds running.
    Exit 0: nothing to do, 2: changes pending, 1: error."""
    result, reviewed = _sync(config, prune=prune, dry_run=True)
    if as_json:
        entries = []
        for c in result.changes:
            entry: dict[str, Any] = {"action": c.action.value, "campaign_id": c.campaign_id}
            if (r := reviewed.get(c.campaign_id)) is not None:
                entry |= r.to_json()
            entries.append(entry)
        typer.echo(json.dumps(entries))
    else:
        _changes_text(result.changes, reviewed)
        typer.echo(_summary(result.changes, "plan"))
    _exit(2 if result.pending else 0)


@app.command()
def apply(prune: PruneOpt = False, config: ConfigOpt = None) -> None:
    """Create, update, pause or (with --prune) delete schedules so Temporal matches the campaigns directory;
    each update is shown as `plan` shows it."""
    result, reviewed = _sync(config, prune=prune, dry_run=False)
    _changes_text(result.changes, reviewed)
    typer.echo(_summary(result.changes, "applied"))
    _exit(0)


def _summary(changes: list[Any], label: str) -> str:
    """E.g. "plan: 1 create, 2 unchanged"."""
    from collections import Counter

    counts = Counter(c.action.value for c in changes)
    parts = [f"{counts[a]} {a}" for a in ("create", "update", "pause", "unpause", "delete", "unchanged") if counts[a]]
    return f"{label}: " + (", ".join(parts) if parts else "no campaigns")


@app.command()
def status(
    campaign_id: Annotated[str | None, typer.Argument(help="One campaign id [default: all]")] = None,
    config: ConfigOpt = None,
) -> None:
    """Every schedule's state, next run and recent runs, as a table (like GET /schedules), then the campaign
    files that do not load (their schedules keep their last good state)."""
    from scheduler.campaigns.reconcile import load_campaigns
    from scheduler.campaigns.status import schedule_statuses
    from scheduler.temporal import connect

    settings = _settings(config)

    async def go() -> tuple[list[Any], list[Problem]]:
        client = await connect(settings)
        statuses, (_, problems) = await asyncio.gather(
            schedule_statuses(client, [campaign_id] if campaign_id else None), load_campaigns(settings)
        )
        return statuses, [p for p in problems if not p.warning]

    statuses, errors = _run(go())
    if campaign_id and statuses[0] is None:
        _fail(str(NoSchedule(campaign_id)))
    rows = [("CAMPAIGN", "STATE", "CRON", "TIMEZONE", "NEXT RUN (UTC)", "LAST RUN", "RUNNING FLOWS", "VERSION")]
    for s in filter(None, statuses):
        last = s.recent_runs[0] if s.recent_runs else None
        rows.append((
            s.campaign_id,
            "paused" if s.paused else "active",
            " | ".join(s.cron),
            s.timezone,
            s.next_runs[0].strftime("%Y-%m-%d %H:%M") if s.next_runs else "-",
            f"{last.scheduled_at:%Y-%m-%d %H:%M} {last.status}" if last else "-",
            str(s.running_flows),
            s.definition_version or "-",
        ))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    for s in filter(None, statuses):
        if s.note:
            typer.echo(f"{s.campaign_id}: {s.note}")
    if errors:
        typer.echo(f"\n{len(errors)} error(s) in campaign files (their schedules keep their last good state):")
        for p in errors:
            typer.echo(f"  {p}")
    _exit(0)


@app.command()
def validate(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Campaign .toml files, their .tests.toml, or seed-shaped .json definitions"),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Check campaign files and their tests files (`<stem>.tests.toml`); print `path:line: key: message` per
    problem; exit 1 on any error."""
    from scheduler.campaigns.cases import campaign_file_of, load_cases, tests_file_of

    settings = _settings(config)
    given = paths or campaign_files(settings.campaigns.dir)
    if not given:
        _fail("no campaign files to validate")
    files = [p for p in given if not is_tests_file(p)]
    campaigns, problems = load_campaign_files(files)
    for campaign in campaigns:
        problems.extend(deep_checks(campaign, settings.channels))
    by_path = {c.source: c for c in campaigns}
    tests = [p for p in given if is_tests_file(p)] + [t for p in files if (t := tests_file_of(p)).exists()]
    for path in dict.fromkeys(tests):
        campaign = by_path.get(campaign_file_of(path))
        if campaign is None and campaign_file_of(path) not in files:
            campaign, _ = load_campaign(campaign_file_of(path))  # its own problems are its file's
        problems.extend(load_cases(path, campaign)[1])
    files += [t for t in dict.fromkeys(tests) if t not in files]
    errors = [p for p in problems if not p.warning]
    for p in problems:
        typer.echo(str(p), err=p.warning)
    if errors:
        broken = len({p.path for p in errors})
        typer.echo(f"{len(errors)} error(s) in {broken} of {len(files)} file(s)", err=True)
        _exit(1)
    warnings = len(problems) - len(errors)
    typer.echo(f"ok: {len(files)} file(s) valid" + (f", {warnings} warning(s)" if warnings else ""))


@app.command()
def preview(
    file: Annotated[Path, typer.Argument(help="A campaign .toml file")],
    count: Annotated[int, typer.Option("-n", "--count", min=1, max=1000, help="How many fire times")] = 10,
    start: Annotated[
        str | None,
        typer.Option("--from", help="ISO datetime to start after [default: now]; without an offset: campaign time"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Only a JSON list of UTC timestamps on stdout")] = False,
) -> None:
    """The next fire times of a campaign's schedule, exactly as Temporal will fire them."""
    from datetime import datetime

    from scheduler.campaigns.cron import preview as fire_times

    campaign, problems = load_campaign(file)
    for p in problems:
        typer.echo(str(p), err=True)
    if campaign is None or campaign.schedule is None:
        _exit(1)
    try:
        after = datetime.fromisoformat(start) if start else None
    except ValueError:
        _fail(f"--from: {start!r} is not an ISO 8601 datetime (e.g. 2027-03-14T00:00 or 2027-03-14T00:00:00Z)")
    schedule = campaign.schedule
    times = fire_times(schedule, count=count, start=after)
    if as_json:
        typer.echo(json.dumps([t.isoformat().replace("+00:00", "Z") for t in times]))
        _exit(0)
    from zoneinfo import ZoneInfo

    tz = ZoneInfo(schedule.timezone)
    state = "" if campaign.campaign.enabled else " (disabled: the schedule is paused, these are its spec's times)"
    typer.echo(f"{campaign.id}: {' | '.join(schedule.cron)} in {schedule.timezone}{state}")
    for t in times:
        typer.echo(f"  {t.astimezone(tz):%Y-%m-%d %H:%M:%S %Z}  =  {t:%Y-%m-%d %H:%M:%S} UTC")
    if not times:
        typer.echo("  (never fires)")
    _exit(0)


@app.command()
def graph(
    file: Annotated[Path, typer.Argument(help="A campaign .toml file or a seed-shaped .json definition")],
) -> None:
    """Print the definition as a Mermaid flowchart."""
    from scheduler.campaigns.graph import mermaid

    campaign, problems = load_campaign(file)
    if campaign is None:
        for p in problems:
            typer.echo(str(p), err=True)
        _exit(1)
    typer.echo(mermaid(campaign.workflow), nl=False)


@app.command()
def start(
    campaign: Annotated[str | None, typer.Option(help="Campaign id [default: campaigns.default]")] = None,
    workflow_id: Annotated[
        str | None,
        typer.Option("--workflow-id", help="[default: <campaign id>-<uuid>; abandoned-cart: abandoned_cart-<uuid>]"),
    ] = None,
    customer: Annotated[
        str | None, typer.Option(help='Customer as JSON, e.g. \'{"id": "c1", "phone": "+1555"}\'')
    ] = None,
    cart: Annotated[str | None, typer.Option(help="Cart as JSON")] = None,
    config: ConfigOpt = None,
) -> None:
    """Start one flow (like POST /start-workflow) and print its ids as JSON."""
    from scheduler.campaigns.start import STARTED, start_flow
    from scheduler.temporal import connect

    settings = _settings(config)
    customer_data, cart_data = _json_option("--customer", customer), _json_option("--cart", cart)

    async def go() -> dict[str, str]:
        client = await connect(settings)
        handle = await start_flow(
            client, settings, campaign_id=campaign, workflow_id=workflow_id, customer=customer_data, cart=cart_data
        )
        return {
            "workflow_id": handle.id,
            "run_id": handle.result_run_id or "",
            "message": STARTED,
        }

    typer.echo(json.dumps(_run(go())))
    _exit(0)


@app.command()
def signal(
    workflow_id: Annotated[str, typer.Argument(help="The flow's workflow id")],
    name: Annotated[str, typer.Option("--name", help="Signal name")] = CLIENT_ANSWERED_SIGNAL,
    text: Annotated[str | None, typer.Option(help="Reply text (STOP opts out; START, YES opt in and answer)")] = None,
    reply_id: Annotated[str | None, typer.Option("--reply-id", help="A repeated reply id is ignored")] = None,
    run_id: Annotated[str | None, typer.Option("--run-id")] = None,
    config: ConfigOpt = None,
) -> None:
    """Send a signal to a running flow (like POST /send-signal).

    A reply that is one keyword (STOP, START, HELP, … see `[compliance]`) changes the consent of the
    flow's customer in every campaign, also when the flow has ended; an opt-in (START, YES) also
    answers the flow when it is running, STOP ends it, HELP leaves it waiting.
    """
    from scheduler.campaigns.start import signal_flow, signal_sent
    from scheduler.flow.signals import Reply
    from scheduler.replies.keywords import KeywordRules, apply_keyword, keyword_of
    from scheduler.replies.routing import FlowTarget
    from scheduler.store.consent import Consent
    from scheduler.temporal import connect

    settings = _settings(config)
    reply = Reply(reply_id=reply_id, text=text, channel="cli")
    keyword = name == CLIENT_ANSWERED_SIGNAL and keyword_of(text, settings.compliance) is not None

    async def go() -> str:
        client = await connect(settings)
        if keyword:
            store = _store(config)
            try:
                target = FlowTarget(workflow_id=workflow_id)
                handled = await apply_keyword(
                    client,
                    Consent(store),
                    KeywordRules.of(settings),
                    target=target,
                    reply=reply,
                )
                assert handled is not None
                return handled.message(workflow_id)
            finally:
                store.close()
        await signal_flow(client, workflow_id=workflow_id, run_id=run_id, signal_name=name, reply=reply)
        return signal_sent(name, workflow_id)

    typer.echo(json.dumps({"message": _run(go())}))
    _exit(0)


_CONVERT_FLAGS = {
    "cart_id": "--cart",
    "customer_id": "--customer",
    "conversion_id": "--id",
    "contact": "--contact",
    "amount": "--amount",
    "currency": "--currency",
    "occurred_at": "--at",
}


@app.command()
def convert(
    cart: Annotated[str | None, typer.Option(help="The cart bought (its flows are signalled)")] = None,
    customer: Annotated[str | None, typer.Option(help="The customer who bought (when no --cart)")] = None,
    amount: Annotated[str | None, typer.Option(help="What was paid, e.g. 19.99 (with --currency)")] = None,
    currency: Annotated[str | None, typer.Option(help="ISO 4217 code, e.g. EUR (with --amount)")] = None,
    conversion_id: Annotated[str | None, typer.Option("--id", help="The shop's id: a repeated id counts once")] = None,
    contact: Annotated[str | None, typer.Option(help="The buyer's phone or e-mail, kept with it")] = None,
    at: Annotated[
        str | None, typer.Option(help="When it was bought, ISO 8601 (UTC without an offset) [default: now]")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Record a purchase (like POST /webhooks/conversions): signal `cart-converted` to the running flows of the cart
    (or customer) and attribute it to its campaigns' flows. Recorded also when no flow is running."""
    from pydantic import ValidationError

    from scheduler.api.webhooks import ConversionRequest
    from scheduler.errors import NoFlowForConversion
    from scheduler.replies.attribution import convert as record_and_signal
    from scheduler.store.conversions import Conversions
    from scheduler.temporal import connect

    settings = _settings(config)
    given = {"cart_id": cart, "customer_id": customer, "conversion_id": conversion_id, "contact": contact}
    given |= {"amount": amount, "currency": currency, "occurred_at": at}
    try:
        request = ConversionRequest.model_validate({k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        loc = error["loc"]
        where = _CONVERT_FLAGS[str(loc[0])] if loc else "--cart or --customer"
        _fail(f"{where}: {error['msg'].removeprefix('Value error, ')}")
    record = request.record(None)

    async def go() -> dict[str, Any]:
        client = await connect(settings)
        conversions = Conversions(_store(config))
        try:
            signaled = await record_and_signal(client, conversions, settings, record)
        except NoFlowForConversion as exc:
            return {"conversion_id": record.conversion_id, "signaled": [], "message": str(exc)}
        finally:
            conversions.store.close()
        return {"conversion_id": record.conversion_id, "signaled": signaled}

    typer.echo(json.dumps(_run(go())))
    _exit(0)


@app.command()
def stats(
    campaign_id: Annotated[str, typer.Argument(help="The campaign's id")],
    since: Annotated[
        str | None, typer.Option(help="ISO 8601 date or time (UTC without an offset) [default: 7 days ago]")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the same JSON as GET /campaigns/ID/stats")] = False,
    config: ConfigOpt = None,
) -> None:
    """A campaign's funnel: flows running at each step now, and outcomes, starts and answers since `--since`
    (from Temporal's visibility, about a second behind the flows)."""

    from scheduler.campaigns.stats import known_campaign_stats
    from scheduler.errors import StoreUnavailable
    from scheduler.store import Store
    from scheduler.store.deliveries import Deliveries
    from scheduler.temporal import connect

    settings = _settings(config)
    start = _moment("--since", since)

    async def go() -> Any:
        try:
            store: Store | None = Store.open(settings.store_url)
        except StoreUnavailable as exc:  # the funnel comes from Temporal; only the delivery counts are missing
            typer.echo(f"warning: no delivery counts: {exc}", err=True)
            store = None
        try:
            deliveries = Deliveries(store) if store is not None else None
            return await known_campaign_stats(await connect(settings), campaign_id, since=start, deliveries=deliveries)
        finally:
            if store is not None:
                store.close()

    result = _run(go())
    if as_json:
        typer.echo(result.model_dump_json())
        _exit(0)
    typer.echo(f"campaign {campaign_id}: since {result.since:%Y-%m-%d %H:%M} UTC")
    rows = [("RUNNING AT STEP", "FLOWS"), *((step, str(n)) for step, n in result.running.items())]
    rows += [("", ""), ("ENDED AS", "FLOWS"), *((outcome, str(n)) for outcome, n in result.outcomes.items())]
    if result.intents:
        rows += [("", ""), ("LAST ANSWER'S INTENT", "FLOWS"), *((name, str(n)) for name, n in result.intents.items())]
    for step, counts in result.deliveries.items():
        rows += [("", ""), (f"MESSAGES OF {step}", "MESSAGES"), *((s, str(n)) for s, n in counts.items())]
    width = max(len(r[0]) for r in rows)
    for name, n in rows:
        typer.echo(f"{name.ljust(width)}  {n}".rstrip())
    share = f" ({100 * result.answered / result.started:.0f} %)" if result.started else ""
    typer.echo(f"\nstarted {result.started}, answered {result.answered}{share}")
    _exit(0)


@app.command()
def experiments(
    campaign_id: Annotated[str, typer.Argument(help="The campaign's id")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the same JSON as GET /campaigns/ID/experiments")
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """A campaign's experiments: per `split` step and variant, flows entered, messaged, answered and converted,
    revenue, and each variant against the holdout with an always-valid 95 % interval (safe to look at daily)."""

    from scheduler.experiments.results import campaign_experiments
    from scheduler.store.conversions import Conversions
    from scheduler.temporal import connect

    settings = _settings(config)

    async def go() -> Any:
        store = _store(config)
        try:
            return await campaign_experiments(await connect(settings), Conversions(store), campaign_id)
        finally:
            store.close()

    report = _run(go())
    if as_json:
        typer.echo(report.model_dump_json())
        _exit(0)
    typer.echo(f"campaign {campaign_id}: conversions attributed within {report.attribution_window} of a flow's start")
    if not report.experiments:
        typer.echo("no split step in the definition its schedule runs")
    for experiment in report.experiments:
        rows = [("VARIANT", "WEIGHT", "ENTERED", "MESSAGED", "ANSWERED", "CONVERTED", "RATE", "REVENUE/FLOW")]
        for v in experiment.variants:
            rate = "-" if v.conversion_rate is None else f"{100 * v.conversion_rate:.1f} %"
            revenue = ", ".join(f"{amount} {currency}" for currency, amount in v.revenue_per_flow.items()) or "-"
            name = f"{v.name} (holdout)" if v.holdout else v.name
            counts = (v.weight, v.entered, v.messaged, v.answered, v.converted)
            rows.append((name, *(str(n) for n in counts), rate, revenue))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        typer.echo(f"\nexperiment {experiment.experiment} (step {experiment.step})")
        for row in rows:
            typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        verdict = experiment.verdict
        for line in [verdict.warning, verdict.note, *(c.text for c in verdict.comparisons)]:
            if line:
                typer.echo(f"  {line}")
    _exit(0)


DEMO_CUSTOMER = {"id": "c1", "name": "Ada", "phone": "+12125550100", "email": "ada@example.com"}
DEMO_CART = {"id": "cart-1", "url": "https://shop.example/cart/1", "total": "42.00"}


@app.command()
def simulate(
    file: Annotated[Path, typer.Argument(help="A campaign .toml file (or a seed .json definition)")],
    customer: Annotated[
        str | None, typer.Option(help=f"Customer as JSON [default: {json.dumps(DEMO_CUSTOMER)}]")
    ] = None,
    cart: Annotated[str | None, typer.Option(help=f"Cart as JSON [default: {json.dumps(DEMO_CART)}]")] = None,
    at: Annotated[
        str | None, typer.Option(help="When the flow starts, ISO 8601, now or later (UTC without an offset)")
    ] = None,
    reply: Annotated[
        list[str] | None,
        typer.Option(
            help="[STEP=]TEXT[@DELAY]: the customer answers TEXT in wait_answer STEP (TEXT without '=': the first"
            " the flow reaches), DELAY after it began"
        ),
    ] = None,
    convert_at: Annotated[
        str | None, typer.Option("--convert-at", help="The customer buys DELAY after the start (e.g. 2h)")
    ] = None,
    all_paths: Annotated[
        bool,
        typer.Option(
            "--all-paths", help="Every answered (each intent, none)/opted out/timed out and webhook 2xx/failure"
        ),
    ] = False,
    max_paths: Annotated[int, typer.Option("--max-paths", min=1, help="Refuse more combinations than this")] = 64,
    as_json: Annotated[
        bool, typer.Option("--json", help='A list of {"path","events","outcome","messages",…}, one per path')
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Run a campaign's real flow on a time-skipping test server, nothing sent, and print what happens when.

    Without --reply no one answers (every wait times out). Exit 0 when every path ends, 1 when one fails
    (a template error, a step that would fail), naming it. `validate` is the static check; this is the dynamic one.
    """

    from datetime import UTC, datetime, timedelta

    from scheduler import simulate as sim
    from scheduler.flow.durations import format_duration, parse_duration
    from scheduler.flow.simulation import PlannedReply, SimulationPlan

    settings = _settings(config)
    campaign, problems = load_campaign(file)
    for p in problems:
        typer.echo(str(p), err=True)
    if campaign is None or any(not p.warning for p in problems):
        _exit(1)
    definition = campaign.workflow
    customer_data = _json_option("--customer", customer) or DEMO_CUSTOMER
    cart_data = _json_option("--cart", cart) or DEMO_CART

    def duration(flag: str, text: str) -> Any:
        try:
            return parse_duration(text)
        except ValueError as exc:
            _fail(f"{flag}: {exc}")

    start = _moment("--at", at)
    if start is not None and start < datetime.now(UTC):  # checked again against the test server's clock
        _fail(f"--at {start.isoformat()} is in the past: a simulation starts now or later")
    if all_paths and (reply or convert_at):
        _fail("--all-paths chooses the replies itself: leave out --reply and --convert-at")
    if all_paths:
        combinations = sim.count_paths(definition)
        if combinations > max_paths:
            _fail(f"{file}: {combinations} combinations of replies and webhook results, over --max-paths {max_paths}")
        plans = [(choices, sim.plan_of(choices)) for choices in sim.all_plans(definition)]
    else:
        replies = []
        for given in reply or []:
            step, eq, rest = given.partition("=")
            if not eq:  # TEXT alone: for the first wait the flow reaches
                step, rest = sim.first_wait(definition) or "", given
            text, _, delay = rest.rpartition("@") if "@" in rest else (rest, "", "")
            if definition.steps.get(step) is None or definition.steps[step].node != "wait_answer":
                waits = ", ".join(n for n, s in definition.steps.items() if s.node == "wait_answer") or "none"
                _fail(f"--reply {given!r}: expected [STEP=]TEXT[@DELAY] with a wait_answer step ({waits})")
            after = duration("--reply", delay) if delay else timedelta(0)
            replies.append(PlannedReply(step=step, text=text, after=after, opt_out=sim.is_opt_out(text, settings)))
        convert = duration("--convert-at", convert_at) if convert_at else None
        combinations = 1
        given = [sim.Choice(r.step, f"{r.text}@{format_duration(r.after)}") for r in replies]
        given += [sim.Choice("purchase", f"@{format_duration(convert)}")] if convert else []
        plans = [(given, SimulationPlan(replies=replies, convert_after=convert))]
    if not as_json:
        typer.echo(f"{file}: {combinations} combination(s) to run")

    async def go() -> Any:
        return await sim.simulate(campaign, settings, plans, customer=customer_data, cart=cart_data, at=start)

    logging.getLogger("temporalio").setLevel(logging.ERROR)  # a planned webhook failure is no warning
    paths = _run(go())
    if as_json:
        typer.echo(json.dumps([first.model_dump(mode="json") for first, _ in sim.distinct(paths)]))
    else:
        zone = sim.customer_zone(campaign, customer_data)
        for line in sim.timeline(paths, zone=zone, combinations=combinations):
            typer.echo(line)
    failed = [p for p in paths if p.error]
    for p in failed:
        typer.echo(
            f"error: path {' → '.join(p.path)} ({', '.join(p.choices) or 'no reply'}) failed: {p.error}", err=True
        )
    _exit(1 if failed else 0)


@app.command("test")
def test_campaigns(
    files: Annotated[
        list[Path] | None,
        typer.Argument(help="Campaign files or their .tests.toml files [default: every campaign of campaigns.dir]"),
    ] = None,
    junit: Annotated[Path | None, typer.Option("--junit", help="Also write JUnit XML to this file")] = None,
    require: Annotated[bool, typer.Option("--require", help="A campaign without a tests file fails")] = False,
    config: ConfigOpt = None,
) -> None:
    """Run the campaigns' test cases (`<stem>.tests.toml`) on a time-skipping test server, nothing sent.

    Prints each case PASS/FAIL with expected and actual path, outcome and messages. Exit 0 when every case
    passes, 1 when one fails (or, with --require, a campaign has no tests file), 2 when a file is invalid.
    """
    import time

    from scheduler import campaign_tests

    settings = _settings(config)
    began = time.monotonic()
    suites, problems = campaign_tests.collect(files or [], settings.campaigns.dir)
    if not suites:
        _fail(f"no campaign files in {settings.campaigns.dir}")
    if problems:
        for p in problems:
            typer.echo(str(p), err=True)
        typer.echo(f"{len(problems)} problem(s): no case ran", err=True)
        _exit(2)
    logging.getLogger("temporalio").setLevel(logging.ERROR)  # a planned webhook failure is no warning
    results = _run(campaign_tests.run_suites(suites, settings))
    for line in campaign_tests.report(suites, results, elapsed=time.monotonic() - began, require=require):
        typer.echo(line)
    if junit is not None:
        try:
            junit.write_bytes(campaign_tests.junit(suites, results, require=require))
        except OSError as exc:
            _fail(f"--junit {junit}: {exc.strerror or exc}")
    untested = require and any(s.tests is None for s in suites)
    _exit(1 if untested or not all(r.passed for r in results) else 0)


class _StopMode(enum.StrEnum):  # typer shows an Enum's values as the choices
    cancel = "cancel"
    drain = "drain"


def _cli_caller() -> str:
    """Who stops or resumes from the command line, for the schedule's note and the stop's record."""
    try:
        return f"the CLI ({getpass.getuser()})"
    except (OSError, KeyError):
        return "the CLI"


@app.command()
def stop(
    campaign_id: Annotated[str, typer.Argument(help="The campaign's id")],
    mode: Annotated[
        _StopMode, typer.Option(help="cancel: cancel its running flows; drain: let them finish")
    ] = _StopMode.cancel,
    reason: Annotated[str, typer.Option(help="Why: the schedule's note and the flows' cancel reason")] = "",
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Return once the cancellation has begun")] = False,
    as_json: Annotated[bool, typer.Option("--json", help='Print {"schedule","cancelled"}')] = False,
    config: ConfigOpt = None,
) -> None:
    """Emergency stop (like POST /campaigns/ID/stop): pause the campaign's schedule, end a run still starting
    flows, and cancel its running flows (they end `stopped`), or with `--mode drain` let them finish.

    Then waits, with a progress line, until no flow started before the stop runs (Ctrl-C stops waiting, not
    the stop). `scheduler resume ID` unpauses the schedule, which also ends the waiting.
    """
    from scheduler.campaigns.schedules import ScheduleWriter
    from scheduler.campaigns.stop import Stopper
    from scheduler.store import Store
    from scheduler.store.stops import CampaignStops, StopMode
    from scheduler.temporal import connect

    settings = _settings(config)
    by, stop_mode = _cli_caller(), StopMode(mode.value)
    try:
        store: Store | None = Store.open(settings.store_url)
    except SchedulerError as exc:  # pausing and cancelling matter more than the stop's record
        typer.echo(f"warning: the stop goes unrecorded: {exc}", err=True)
        store = None

    async def go() -> Any:
        client = await connect(settings)
        stopper = Stopper(client, ScheduleWriter(client, settings), CampaignStops(store) if store else None)
        stopped = await stopper.stop(campaign_id, mode=stop_mode, reason=reason, by=by)
        result = stopped.result
        if as_json:
            typer.echo(json.dumps(result.model_dump()))
        else:
            cancelled = f"{result.cancelled} running flow(s) cancelled" if stop_mode == StopMode.CANCEL else "draining"
            typer.echo(f"stopped campaign {campaign_id}: schedule {result.schedule}, {cancelled}")
        if no_wait:
            return

        def progress(running: int) -> None:
            typer.echo(f"\r{running} flow(s) of {campaign_id} still running\x1b[K", err=True, nl=False)

        running, resumed = await stopper.finish(stopped, progress=progress)
        if resumed:
            typer.echo(f"\r{campaign_id} was resumed; stopped waiting ({running} flow(s) of the stop left)\x1b[K",
                       err=True)  # fmt: skip
        else:
            typer.echo(f"\rno flow of {campaign_id} runs any more\x1b[K", err=True)

    try:
        _run(go())
    except KeyboardInterrupt:
        typer.echo("\nstopped waiting; the stop stands (`scheduler status` shows the flows left)", err=True)
    finally:
        if store is not None:
            store.close()
    _exit(0)


@app.command()
def resume(
    campaign_id: Annotated[str, typer.Argument(help="The campaign's id")],
    config: ConfigOpt = None,
) -> None:
    """Unpause a stopped (or paused) campaign's schedule; the flows a stop ended stay ended."""
    from scheduler.campaigns.schedules import ScheduleWriter
    from scheduler.campaigns.stop import Stopper
    from scheduler.temporal import connect

    settings = _settings(config)

    async def go() -> str:
        client = await connect(settings)
        return await Stopper(client, ScheduleWriter(client, settings), None).resume(campaign_id, by=_cli_caller())

    typer.echo(json.dumps({"message": _run(go())}))
    _exit(0)


def _moment(flag: str, value: str | None) -> Any:
    """An ISO 8601 date or time option as an aware datetime (UTC when it has no offset); None if not given."""
    from datetime import UTC, datetime

    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        _fail(f"{flag}: not an ISO 8601 date or time: {value!r}")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _json_option(flag: str, value: str | None) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        _fail(f"{flag}: invalid JSON: {exc.msg}")
    if not isinstance(parsed, dict):
        _fail(f"{flag}: expected a JSON object, got {value!r}")
    return parsed


suppress_app = typer.Typer(
    help="The suppression list: contacts that opted out of every campaign.", no_args_is_help=True
)
app.add_typer(suppress_app, name="suppress")
db_app = typer.Typer(help="The service's own database (the store).", no_args_is_help=True)
app.add_typer(db_app, name="db")
keys_app = typer.Typer(help="API keys: who may call the HTTP API (see `Authorization: Bearer`).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


def _store(config: Path | None) -> Any:
    """The configured store, migrated; one line and exit 1 if it cannot be reached."""
    from scheduler.store import Store

    settings = _settings(config)
    try:
        return Store.open(settings.store_url)
    except SchedulerError as exc:
        _fail(str(exc))


def _consent(config: Path | None) -> Any:
    from scheduler.store.consent import Consent

    return Consent(_store(config))


@contextlib.contextmanager
def _one_line_errors() -> Iterator[None]:
    """A contact that is neither a phone nor an e-mail address, a contact not suppressed, a bad or unknown key
    name: one line, exit 1."""
    try:
        yield
    except SchedulerError as exc:
        _fail(str(exc))


@suppress_app.command("add")
def suppress_add(
    contact: Annotated[str, typer.Argument(help="A phone number or an e-mail address")],
    reason: Annotated[str, typer.Option(help="Why (kept in the history)")] = "cli",
    config: ConfigOpt = None,
) -> None:
    """Suppress a contact: no campaign messages it until it is removed."""
    consent = _consent(config)
    with _one_line_errors():
        entry, created = consent.suppress(contact, reason=reason)
    typer.echo(f"{'suppressed' if created else 'already suppressed'}: {entry.contact}")
    _exit(0)


@suppress_app.command("remove")
def suppress_remove(
    contact: Annotated[str, typer.Argument(help="A phone number or an e-mail address")],
    config: ConfigOpt = None,
) -> None:
    """Opt a contact back in (its entry stays in the history). Exit 1 if it is not suppressed."""
    consent = _consent(config)
    with _one_line_errors():
        consent.lift(contact, reason="cli")
    typer.echo(f"removed: {contact}")
    _exit(0)


@suppress_app.command("list")
def suppress_list(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON list")] = False,
    config: ConfigOpt = None,
) -> None:
    """Every suppressed contact, oldest first."""
    consent = _consent(config)
    entries = list(consent.all())
    if as_json:
        typer.echo(json.dumps([e.model_dump(mode="json") for e in entries]))
    else:
        for e in entries:
            typer.echo(f"{e.contact}\t{e.kind}\t{e.at:%Y-%m-%d %H:%M}Z\t{e.reason}")
        typer.echo(f"{len(entries)} suppressed", err=True)
    _exit(0)


@suppress_app.command("import")
def suppress_import(
    file: Annotated[Path, typer.Argument(help="CSV with a `contact` column and an optional `reason` column")],
    config: ConfigOpt = None,
) -> None:
    """Suppress every contact of a CSV in one transaction; bad rows are listed with their line and left out.

    Exit 0: every row added or suppressed already; 1: some rows were bad (the good ones are imported), or the
    file is not CSV (nothing is imported)."""
    consent = _consent(config)
    try:
        with file.open(encoding="utf-8-sig", newline="") as f:
            result = consent.import_csv(f)
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"cannot read {file}: {exc}")
    if result.refused is not None:
        _fail(f"{file}:{result.refused}; nothing imported")
    for problem in result.problems:
        typer.echo(f"{file}:{problem}", err=True)
    if result.bad > len(result.problems):
        typer.echo(f"{file}: {result.bad - len(result.problems)} more bad rows", err=True)
    typer.echo(f"imported: {result.added} added, {result.already} already suppressed, {result.bad} bad")
    _exit(1 if result.bad else 0)


@suppress_app.command("export")
def suppress_export(
    file: Annotated[Path | None, typer.Argument(help="Where to write the CSV [default: standard output]")] = None,
    config: ConfigOpt = None,
) -> None:
    """Every suppressed contact as CSV: contact, kind, reason, at, campaign_id, workflow_id.

    A cell that would start with = + - @ (a phone's `+` too), a tab or a carriage return starts with `'`
    (spreadsheet formula injection); `suppress import` takes it off again."""
    consent = _consent(config)
    if file is None:
        count = consent.export_csv(sys.stdout)
    else:
        with file.open("w", encoding="utf-8", newline="") as f:
            count = consent.export_csv(f)
    typer.echo(f"{count} exported", err=True)
    _exit(0)


class _Scope(enum.StrEnum):
    read = "read"
    write = "write"


def _keys(config: Path | None) -> Any:
    from scheduler.store.api_keys import Keys

    return Keys(_store(config))


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="1-64 letters, digits, '.', '_', '-'; never reused once revoked")],
    scope: Annotated[_Scope, typer.Option("--scope", help="read: the GET routes; write: every route")],
    as_json: Annotated[bool, typer.Option("--json", help='Print {"name","key","scope"}')] = False,
    config: ConfigOpt = None,
) -> None:
    """Create an API key and print it: the only time it is shown (the store keeps its hash)."""
    keys = _keys(config)
    with _one_line_errors():
        entry, key = keys.create(name, scope=scope.value)
    keys.store.close()
    if as_json:
        typer.echo(json.dumps({"name": entry.name, "key": key, "scope": entry.scope}))
    else:
        typer.echo(key)
        typer.echo(f"created API key {entry.name!r} ({entry.scope}): copy it now, it is not shown again", err=True)
    _exit(0)


@keys_app.command("list")
def keys_list(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON list")] = False,
    config: ConfigOpt = None,
) -> None:
    """Every API key, revoked ones too: name, scope, created, revoked (never the key)."""
    keys = _keys(config)
    entries = keys.all()
    keys.store.close()
    if as_json:
        typer.echo(json.dumps([e.model_dump(mode="json") for e in entries]))
        _exit(0)
    rows = [("NAME", "SCOPE", "CREATED (UTC)", "REVOKED (UTC)")]
    for e in entries:
        revoked = f"{e.revoked_at:%Y-%m-%d %H:%M:%S}" if e.revoked_at else "-"
        rows.append((e.name, e.scope, f"{e.created_at:%Y-%m-%d %H:%M:%S}", revoked))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    _exit(0)


@keys_app.command("revoke")
def keys_revoke(
    name: Annotated[str, typer.Argument(help="The key's name (see `scheduler keys list`)")],
    config: ConfigOpt = None,
) -> None:
    """Revoke an API key: every API process refuses it within 5 seconds. Its entry stays in the list."""
    keys = _keys(config)
    with _one_line_errors():
        keys.revoke(name)
    keys.store.close()
    typer.echo(f"revoked: {name}")
    _exit(0)


@db_app.command("upgrade")
def db_upgrade(config: ConfigOpt = None) -> None:
    """Bring the store's schema up to date (`scheduler up`, `worker` and `api` also do it at start)."""
    store = _store(config)
    typer.echo(f"store up to date: {store.shown_url}")
    store.close()
    _exit(0)


def main() -> None:
    app()
