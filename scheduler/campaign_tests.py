"""`scheduler test`: a campaign's test cases (`<stem>.tests.toml`, `scheduler.campaigns.cases`) run and compared.

Every case of every campaign asked for runs at once on one time-skipping test server, through the
simulator's machinery (`scheduler.simulate.run_flows`): the campaign's real definition and delivery policy,
the case's start instant as the flow's, its replies and purchase at their offsets, webhooks answering the
case's statuses, and a temporary store of its own holding its suppression and earlier sends, which the
real activities check. Nothing is sent. Each case's path, outcome and messages are compared with what it
expects (a key it leaves out is not checked).
"""

from __future__ import annotations

import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import insert

from scheduler.campaigns.campaign import Campaign, campaign_files, is_tests_file, load_campaign, shown_path
from scheduler.campaigns.cases import Case, TestsFile, campaign_file_of, load_cases, tests_file_of
from scheduler.config import Settings
from scheduler.flow.contacts import customer_contacts
from scheduler.flow.simulation import PlannedReply, SimulationPlan
from scheduler.problems import Problem
from scheduler.simulate import SimulatedFlow, SimulatedMessage, SimulatedPath, customer_zone, is_opt_out, run_flows
from scheduler.store import Store, sends
from scheduler.store.consent import Consent

AT_TOLERANCE = timedelta(minutes=1)
"""An expected `at` matches a message sent within this of it. The test server's clock runs in real time while an
activity runs (time skips only while every flow waits), so a time after a rendered message lags by the render's
duration: milliseconds, seconds on a loaded machine."""


@dataclass
class Suite:
    """One campaign and its cases (none: untested)."""

    campaign_path: Path
    campaign: Campaign | None
    tests: TestsFile | None


@dataclass
class CaseResult:
    suite: Suite
    case: Case
    actual: SimulatedPath
    differences: list[str] = field(default_factory=list)
    """Readable lines, empty when the case passed."""

    @property
    def passed(self) -> bool:
        return not self.differences


def collect(paths: list[Path], campaigns_dir: Path) -> tuple[list[Suite], list[Problem]]:
    """The campaigns these files name (campaign files or tests files; none: the whole directory), each with
    its loaded cases, and every problem of their files (a broken tests file is reported, never run)."""
    wanted = [campaign_file_of(p) if is_tests_file(p) else p for p in paths] or campaign_files(campaigns_dir)
    suites: list[Suite] = []
    problems: list[Problem] = []
    for path in dict.fromkeys(wanted):
        campaign, found = load_campaign(path)
        problems.extend(p for p in found if not p.warning)
        tests_path = tests_file_of(path)
        if not tests_path.exists():
            if any(is_tests_file(p) and campaign_file_of(p) == path for p in paths):
                problems.append(Problem(shown_path(tests_path), 1, "", "no such file"))
            suites.append(Suite(path, campaign, None))
            continue
        tests, found = load_cases(tests_path, campaign)
        problems.extend(found)
        suites.append(Suite(path, campaign, tests))
    return suites, problems


async def run_suites(suites: list[Suite], settings: Settings) -> list[CaseResult]:
    """Run every case of these suites at once on one test server and compare each with what it expects."""
    runs = [(suite, case) for suite in suites if suite.tests and suite.campaign for case in suite.tests.cases]
    if not runs:
        return []
    with tempfile.TemporaryDirectory(prefix="scheduler-test-") as tmp, ExitStack() as stores:
        flows = []
        for n, (suite, case) in enumerate(runs):
            assert suite.campaign is not None
            store = stores.enter_context(_case_store(Path(tmp) / f"case-{n}.db", case, settings))
            flows.append(SimulatedFlow(suite.campaign, _plan(case, settings), case.customer, case.cart, store=store))
        ids = [f"test-{suite.campaign.id}-{n}" for n, (suite, _) in enumerate(runs) if suite.campaign]
        paths = await run_flows(flows, settings, ids=ids)
    return [
        CaseResult(suite, case, actual, compare(case, actual, zone=customer_zone(suite.campaign, case.customer)))
        for (suite, case), actual in zip(runs, paths, strict=True)
        if suite.campaign is not None
    ]


def _plan(case: Case, settings: Settings) -> SimulationPlan:
    replies = [
        PlannedReply(step=r.step, text=r.text, after=r.after, opt_out=is_opt_out(r.text, settings))
        for r in case.replies
    ]
    convert = case.conversions[0].after if case.conversions else None
    return SimulationPlan(replies=replies, convert_after=convert, webhooks=case.webhooks, begins_at=case.start)


@contextmanager
def _case_store(path: Path, case: Case, settings: Settings) -> Iterator[Store | None]:
    """A store of the case's own when it has anything to hold: its suppression, its earlier sends, or the sends
    the service's frequency caps would count (None: the flow checks no list and counts against no cap)."""
    if not (case.suppressed or case.history or settings.compliance.frequency_caps):
        yield None
        return
    store = Store.open(f"sqlite:///{path}")
    try:
        contacts = customer_contacts(case.customer)
        if case.suppressed:
            consent = Consent(store)
            for contact in contacts:
                consent.suppress(contact, reason="test case: suppressed")
        start = case.start or datetime.now().astimezone()
        rows = [
            {
                "contact": contact,
                "channel": sent.channel,
                "campaign_id": "earlier",
                "workflow_id": "earlier",
                "step": "earlier",
                "key": f"earlier-{i}-{k}-{contact}",
                "at": start - sent.ago,
            }
            for i, sent in enumerate(case.history)
            for k in range(sent.count)
            for contact in contacts
        ]
        if rows:
            with store.engine.begin() as connection:
                connection.execute(insert(sends), rows)
        yield store
    finally:
        store.close()


def compare(case: Case, actual: SimulatedPath, *, zone: str) -> list[str]:
    """What differs from the case's expectations, as lines to print (empty: the case passed)."""
    expect = case.expect
    out: list[str] = []
    local = ZoneInfo(zone)
    outcome = actual.outcome or ("failed" if actual.error else None)
    if expect.path is not None and expect.path != actual.path:
        out += [f"path     expected: {_steps(expect.path)}", f"         actual:   {_steps(actual.path)}"]
    if expect.outcome is not None and expect.outcome != outcome:
        out += [f"outcome  expected: {expect.outcome}", f"         actual:   {outcome}"]
    if expect.messages is not None:
        sent = sorted(actual.messages, key=lambda m: m.at)
        fits = [_matches(e.step, e.at, e.contains, m) for e, m in zip(expect.messages, sent, strict=False)]
        if len(sent) != len(expect.messages) or not all(fits):
            count = f" ({len(expect.messages)}, got {len(sent)})" if len(sent) != len(expect.messages) else ""
            out.append(f"messages expected{count}, times in {zone}:")
            for n, e in enumerate(expect.messages):
                at = f" at {e.at.astimezone(local):%Y-%m-%d %H:%M:%S}" if e.at else ""
                contains = f" containing {e.contains!r}" if e.contains is not None else ""
                mark = "  ✗" if n < len(fits) and not fits[n] else ""
                out.append(f"  {e.step}{at}{contains}{mark}")
            out.append("messages actual:")
            out += [f"  {m.step} at {m.at.astimezone(local):%Y-%m-%d %H:%M:%S}: {m.text!r}" for m in sent]
            out += ["  (none)"] if not sent else []
    if actual.error and (out or expect.outcome != "failed"):  # a failure is never a pass unless it is expected
        out.append(f"the flow failed: {actual.error}")
    return out


def _matches(step: str, at: datetime | None, contains: str | None, message: SimulatedMessage) -> bool:
    return (
        message.step == step
        and (at is None or abs(message.at - at) < AT_TOLERANCE)
        and (contains is None or contains in message.text)
    )


def _steps(steps: list[str]) -> str:
    return " → ".join(steps) or "(no step)"


def report(suites: list[Suite], results: list[CaseResult], *, elapsed: float, require: bool) -> list[str]:
    """The text `scheduler test` prints: each case PASS/FAIL with its differences, untested campaigns, a summary."""
    lines: list[str] = []
    for suite in suites:
        if suite.tests is None:
            kind = "FAIL" if require else "untested"
            lines.append(f"{kind}: {shown_path(suite.campaign_path)} has no {tests_file_of(suite.campaign_path).name}")
            continue
        lines.append(shown_path(suite.tests.path))
        for result in (r for r in results if r.suite is suite):
            lines.append(f"  {'PASS' if result.passed else 'FAIL'}  {result.case.name}")
            lines += [f"        {d}" for d in result.differences]
    passed = sum(r.passed for r in results)
    untested = sum(s.tests is None for s in suites)
    summary = f"{passed} passed, {len(results) - passed} failed"
    summary += f", {untested} campaign(s) untested" if untested else ""
    return [*lines, f"{summary} in {elapsed:.1f}s"]


def junit(suites: list[Suite], results: list[CaseResult], *, require: bool) -> bytes:
    """JUnit XML: a testsuite per campaign, a testcase per case with its differences as the failure's text."""
    root = ET.Element("testsuites", name="scheduler test")
    for suite in suites:
        name = suite.campaign.id if suite.campaign else suite.campaign_path.stem
        mine = [r for r in results if r.suite is suite]
        element = ET.SubElement(root, "testsuite", name=name, file=shown_path(suite.campaign_path))
        failures = sum(not r.passed for r in mine)
        if suite.tests is None:
            case = ET.SubElement(element, "testcase", classname=name, name="untested")
            message = f"no {tests_file_of(suite.campaign_path).name}"
            ET.SubElement(case, "failure" if require else "skipped", message=message)
            failures += require
        for result in mine:
            case = ET.SubElement(element, "testcase", classname=name, name=result.case.name)
            if not result.passed:
                differs = [
                    k for k in ("path", "outcome", "messages") if any(d.startswith(k) for d in result.differences)
                ]
                verb = "differs" if len(differs) == 1 else "differ"
                failure = ET.SubElement(case, "failure", message=f"{', '.join(differs) or 'the flow'} {verb}")
                failure.text = "\n".join(result.differences)
        tests = len(mine) + (suite.tests is None)
        element.set("tests", str(tests))
        element.set("failures", str(failures))
        element.set("skipped", str(int(suite.tests is None and not require)))
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)
