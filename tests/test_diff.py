"""An update's change in words (`scheduler.campaigns.diff`) and what it means for flows in flight (`review.fate`)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from scheduler.campaigns.campaign import Campaign, load_campaign
from scheduler.campaigns.diff import MAX_DIFF_LINES, MAX_ENTRIES, campaign_diff, definition_diff
from scheduler.campaigns.review import fate
from scheduler.flow.definition import WorkflowDefinition
from tests.helpers.campaigns import campaign_toml

BASE: dict[str, Any] = {
    "start_step": "ask",
    "steps": {
        "ask": {"node": "send_message", "go_to": "listen", "params": {"template": "Your cart is waiting"}},
        "listen": {
            "node": "wait_answer",
            "params": {"timeout": "1h"},
            "condition": {"satisfied": "send_link"},
            "go_to": "bye",
        },
        "send_link": {"node": "send_message", "params": {"template": "Here: {{ cart.url }}"}},
        "bye": {"node": "send_message", "params": {"template": "Bye"}},
    },
}


def definition(change: Any = None) -> WorkflowDefinition:
    data = copy.deepcopy(BASE)
    if change:
        change(data)
    return WorkflowDefinition.model_validate(data)


def texts(old: WorkflowDefinition, new: WorkflowDefinition) -> list[str]:
    return [e.text for e in definition_diff(old, new)]


def _set(path: str, value: Any) -> Any:
    """A change that sets `steps.<step>.<key>…` (dotted) to `value`; None deletes it."""

    def change(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = data
        for p in parents:
            node = node.setdefault(p, {})
        if value is None:
            node.pop(last)
        else:
            node[last] = value

    return change


def test_definition_diff_of_equal_definitions_is_empty() -> None:
    assert definition_diff(definition(), definition()) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (_set("steps.listen.condition.timeout", "reminder"), ["listen: timeout → reminder (was bye)"]),
        (_set("steps.listen.go_to", "send_link"), ["listen: not_satisfied/timeout → send_link (was bye)"]),
        (_set("steps.ask.go_to", "bye"), ["ask: go_to → bye (was listen)"]),
        (_set("steps.listen.go_to", None), ["listen: not_satisfied/timeout → the end (was bye)"]),
        (_set("steps.bye.node", "notify_creator"), ["bye: node notify_creator (was send_message)"]),
        (_set("steps.listen.params.timeout", "2h"), ['listen: params.timeout "2h" (was "1h")']),
        (_set("start_step", "listen"), ["start_step: listen (was ask)"]),
        (_set("exit_on", ["cart-converted"]), ["exit_on: cart-converted (was none)"]),
        (_set("steps.send_link", None), ["step send_link removed (was send_message)"]),
    ],
    ids=[
        "re-pointed-one-event",
        "re-pointed-go_to-of-two-events",
        "re-pointed-go_to",
        "edge-removed",
        "node",
        "params",
        "start-step",
        "exit-on",
        "step-removed",
    ],
)
def test_definition_diff_says_each_kind_of_change(change: Any, expected: list[str]) -> None:
    assert texts(definition(), definition(change)) == expected


def test_definition_diff_step_added_says_where_it_leads() -> None:
    def add(data: dict[str, Any]) -> None:
        data["steps"]["reminder"] = {"node": "send_message", "go_to": "bye"}
        data["steps"]["listen"]["condition"]["timeout"] = "reminder"

    assert texts(definition(), definition(add)) == [
        "step reminder added: send_message, leads to bye",
        "listen: timeout → reminder (was bye)",
    ]


def test_definition_diff_template_is_a_short_text_diff() -> None:
    new = definition(_set("steps.ask.params.template", "Your cart is waiting\nfor you"))
    (entry,) = definition_diff(definition(), new)
    assert (entry.kind, entry.step, entry.text) == ("template", "ask", "ask: template changed")
    assert entry.lines == ["+ for you"]  # the line both have is not repeated
    to_default = definition_diff(definition(), definition(_set("steps.bye.params", {})))
    assert [(e.text, e.lines) for e in to_default] == [("bye: template changed", ["- Bye", "+ (the node's default)"])]


def test_definition_diff_of_a_long_template_is_bounded() -> None:
    long = "\n".join(f"line {i} " + "x" * 500 for i in range(100))
    (entry,) = definition_diff(definition(), definition(_set("steps.bye.params.template", long)))
    assert len(entry.lines) == MAX_DIFF_LINES + 1
    assert entry.lines[-1] == f"…and {101 - MAX_DIFF_LINES} more lines"
    assert all(len(line) <= 121 for line in entry.lines)


def test_definition_diff_variants_and_intents() -> None:
    def split(weights: dict[str, int]) -> Any:
        def change(data: dict[str, Any]) -> None:
            data["start_step"] = "test"
            data["steps"]["test"] = {
                "node": "split",
                "variants": {name: {"weight": w, "go_to": "ask"} for name, w in weights.items()},
            }

        return change

    old, new = definition(split({"a": 50, "b": 50})), definition(split({"a": 70, "c": 30}))
    assert texts(old, new) == [
        "test: variant a weight 70 (was 50)",
        "test: variant c added (weight 30)",
        "test: variant b removed (was weight 50)",
    ]

    def intents(spec: dict[str, list[str]]) -> Any:
        return _set("steps.listen.intents", {name: {"match": m, "go_to": "send_link"} for name, m in spec.items()})

    base = definition(intents({"buy": ["buy"], "later": ["later"]}))
    assert texts(base, definition(intents({"buy": ["buy", "yes"], "stop": ["no thanks"]}))) == [
        'listen: intent buy match ["buy", "yes"] (was ["buy"])',
        'listen: intent stop added (match ["no thanks"])',
        "listen: intent later removed",
    ]
    assert texts(base, definition(intents({"later": ["later"], "buy": ["buy"]}))) == [
        "listen: intents tried in a new order (later, buy)"
    ]
    repointed = intents({"buy": ["buy"], "later": ["later"]})

    def later_to_bye(data: dict[str, Any]) -> None:
        repointed(data)
        data["steps"]["listen"]["intents"]["later"]["go_to"] = "bye"

    assert texts(base, definition(later_to_bye)) == ["listen: intent later → bye (was send_link)"]


def load(tmp_path: Path, name: str, workflow: str, **options: Any) -> Campaign:
    path = tmp_path / f"{name}.toml"
    path.write_text(campaign_toml("diffed", workflow=workflow, **options), encoding="utf-8")
    campaign, problems = load_campaign(path)
    assert campaign is not None, problems
    return campaign


WORKFLOW = """\
[workflow]
start_step = "send"

[workflow.steps.send]
node = "send_message"
"""


def test_campaign_diff_policy_and_schedule_changes(tmp_path: Path) -> None:
    old = load(tmp_path, "old", WORKFLOW)
    delivery = (
        '\n[delivery]\nquiet_hours = "22:00-07:00"\nmax_delay = "2h"\nfrequency_capped = false\non_cap = "delay"\n'
    )
    new = load(tmp_path, "new", WORKFLOW + delivery, cron=["0 10 * * *"], timezone="Europe/Berlin")

    assert [(e.kind, e.text) for e in campaign_diff(old, new)] == [
        ("delivery", 'delivery.quiet_hours: "22:00-07:00" (was the service\'s (compliance.quiet_hours))'),
        ("delivery", 'delivery.max_delay: "2h" (was "12h")'),
        ("delivery", "delivery.frequency_capped: false (was true)"),
        ("delivery", 'delivery.on_cap: "delay" (was "skip")'),
        ("schedule", 'schedule.timezone: "Europe/Berlin" (was "UTC")'),
        ("schedule", 'schedule.cron: ["0 10 * * *"] (was ["0 9 * * *"])'),
    ]
    none = load(tmp_path, "none", WORKFLOW + '\n[delivery]\nquiet_hours = ""\n')
    assert [e.text for e in campaign_diff(old, none)] == [
        "delivery.quiet_hours: none (was the service's (compliance.quiet_hours))"
    ]
    assert campaign_diff(old, load(tmp_path, "same", "# a comment\n" + WORKFLOW)) == []
    assert [e.text for e in campaign_diff(old, load(tmp_path, "off", WORKFLOW, enabled=False))] == [
        "campaign.enabled: false (was true)"
    ]


def test_campaign_diff_of_a_rewritten_file_is_bounded(tmp_path: Path) -> None:
    many = '[workflow]\nstart_step = "s0"\n' + "".join(
        f'\n[workflow.steps.s{i}]\nnode = "send_message"\n' + (f'go_to = "s{i + 1}"\n' if i < 299 else "")
        for i in range(300)
    )
    entries = campaign_diff(load(tmp_path, "old", WORKFLOW), load(tmp_path, "new", many))
    assert len(entries) == MAX_ENTRIES + 1
    assert entries[-1].text == f"…and {302 - MAX_ENTRIES} more changes"


@pytest.mark.parametrize(
    ("step", "change", "expected"),
    [
        ("listen", _set("steps.listen.condition.timeout", "reminder"), "(listen still leads to bye on timeout there)"),
        ("ask", _set("steps.ask.go_to", "bye"), "(ask still leads to listen there)"),
        ("send_link", _set("steps.send_link", None), "(send_link is only in theirs; there it leads nowhere"),
        (
            "listen",
            _set("steps.listen.go_to", "reminder"),
            "(listen still leads to bye on not_satisfied/timeout there)",
        ),
        (
            "listen",
            _set("steps.listen", None),
            "(listen is only in theirs; there it leads to send_link on satisfied, to bye on not_satisfied/timeout)",
        ),
        ("bye", _set("steps.bye.params.template", "Ciao"), "(bye keeps its old template there)"),
        ("listen", _set("steps.bye.params.template", "Ciao"), "(listen is unchanged)"),
    ],
    ids=[
        "re-pointed-event",
        "re-pointed-go_to",
        "removed-end-step",
        "re-pointed-two-events",
        "removed-wait",
        "template",
        "unchanged",
    ],
)
def test_fate_of_flows_on_the_applied_definition(step: str, change: Any, expected: str) -> None:
    def also_reminder(data: dict[str, Any]) -> None:
        change(data)
        data["steps"]["reminder"] = {"node": "send_message"}
        if "send_link" not in data["steps"]:  # keep the definition whole where the change removed a target
            data["steps"]["listen"]["condition"] = {}

    note = fate(step, definition(), definition(also_reminder))
    assert note.startswith("they finish on their own definition ")
    assert expected in note, note


def test_fate_of_flows_on_another_or_the_new_definition() -> None:
    assert fate("listen", None, definition()) == "they finish on their own definition"
    assert fate("listen", definition(), definition()) == "they run the new definition already"
