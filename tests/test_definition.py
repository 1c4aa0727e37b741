"""Workflow definitions: every validation rule with its key and message, next_step semantics, version, cycles."""

from __future__ import annotations

import copy
import json
import re
from collections import deque
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.campaigns.campaign import load_campaign
from scheduler.delivery.templates import compile_template
from scheduler.flow.definition import (
    WorkflowDefinition,
    find_cycles,
    parse_definition,
    reachable_steps,
    validate_definition,
)
from scheduler.flow.nodes import EventType
from scheduler.problems import Problem
from tests.helpers.campaigns import SEED

SEED_STEPS = "step_1, step_2, step_3, step_4, step_5, step_6"
KNOWN_NODES = "explicit_wait, notify_creator, send_message, split, wait_answer, webhook"
BAD_DURATION = "invalid duration '5x': use a number and a unit (ms, s, m, h, d, w), e.g. '90s' or '1h30m'"


def seed(**changes: Any) -> dict[str, Any]:
    """A deep copy of the seed; `step_2={"go_to": "x"}` merges into that step."""
    data = copy.deepcopy(SEED)
    for name, step in changes.items():
        data["steps"].setdefault(name, {}).update(step)
    return data


def one_step(**step: Any) -> dict[str, Any]:
    return {"start_step": "a", "steps": {"a": {"node": "send_message", **step}}}


def errors(data: dict[str, Any]) -> list[Problem]:
    definition, problems = parse_definition(data, check_template=compile_template)
    assert definition is None
    return [p for p in problems if not p.warning]


def test_definition_seed_is_valid_without_problems() -> None:
    definition, problems = parse_definition(SEED)
    assert problems == []
    assert definition == WorkflowDefinition.model_validate(SEED)


def test_definition_empty_start_step_is_missing() -> None:
    assert errors({**SEED, "start_step": ""}) == [Problem(key="start_step", message="missing start_step")]


def test_definition_absent_start_step_is_required() -> None:
    assert errors({"steps": SEED["steps"]}) == [Problem(key="start_step", message="required key is missing")]


def test_definition_unknown_start_step_lists_steps() -> None:
    assert errors({**SEED, "start_step": "step_9"}) == [
        Problem(key="start_step", message=f"unknown step 'step_9' (steps: {SEED_STEPS})")
    ]


def test_definition_without_steps_is_an_error() -> None:
    assert errors({"start_step": "a", "steps": {}}) == [
        Problem(key="steps", message="the definition has no steps"),
        Problem(key="start_step", message="unknown step 'a'"),
    ]


def test_definition_unknown_node_lists_known_nodes() -> None:
    assert errors(seed(step_3={"node": "send_fax"})) == [
        Problem(key="steps.step_3.node", message=f"unknown node 'send_fax' (known: {KNOWN_NODES})")
    ]


def test_definition_go_to_target_must_be_a_step() -> None:
    assert errors(seed(step_6={"go_to": "step_7"})) == [
        Problem(key="steps.step_6.go_to", message=f"unknown step 'step_7' (steps: {SEED_STEPS})")
    ]


@pytest.mark.parametrize("event", ["satisfied", "not_satisfied", "timeout"])
def test_definition_condition_target_must_be_a_step(event: str) -> None:
    data = seed()
    data["steps"]["step_2"]["condition"] = {event: "nowhere"}
    assert errors(data) == [
        Problem(key=f"steps.step_2.condition.{event}", message=f"unknown step 'nowhere' (steps: {SEED_STEPS})")
    ]


def test_definition_unknown_condition_event_is_refused() -> None:
    data = seed()
    data["steps"]["step_2"]["condition"] = {"answered": "step_3"}
    assert errors(data) == [Problem(key="steps.step_2.condition.answered", message="unknown key")]


def test_definition_cycle_reachable_from_start_is_named() -> None:
    _, problems = parse_definition(seed(step_4={"go_to": "step_2"}))
    assert [p for p in problems if not p.warning] == [
        Problem(key="steps.step_4.go_to", message="cycle: step_2 → step_4 → step_2")
    ]
    # step_5 and step_6 are cut off by the loop.
    assert [p for p in problems if p.warning] == [
        Problem(key="steps.step_5", message="unreachable from start_step 'step_1'", warning=True),
        Problem(key="steps.step_6", message="unreachable from start_step 'step_1'", warning=True),
    ]


def test_definition_self_loop_is_a_cycle() -> None:
    assert errors(one_step(go_to="a")) == [Problem(key="steps.a.go_to", message="cycle: a → a")]


def test_definition_cycle_through_a_condition_names_the_condition_key() -> None:
    data = seed(step_6={"go_to": "step_1"})
    assert errors(data) == [
        Problem(key="steps.step_6.go_to", message="cycle: step_1 → step_2 → step_4 → step_5 → step_6 → step_1")
    ]
    data = seed()
    data["steps"]["step_2"]["condition"]["not_satisfied"] = "step_1"
    assert errors(data) == [
        Problem(key="steps.step_2.condition.not_satisfied", message="cycle: step_1 → step_2 → step_1")
    ]


def test_definition_cycle_among_unreachable_steps_only_warns() -> None:
    data = seed(loop_a={"node": "send_message", "go_to": "loop_b"}, loop_b={"node": "send_message", "go_to": "loop_a"})
    definition, problems = parse_definition(data)
    assert definition is not None
    assert problems == [
        Problem(key="steps.loop_a", message="unreachable from start_step 'step_1'", warning=True),
        Problem(key="steps.loop_b", message="unreachable from start_step 'step_1'", warning=True),
    ]


@pytest.mark.parametrize(
    ("step", "key", "message"),
    [
        ({"node": "send_message", "params": {"tempalte": "hi"}}, "steps.a.params.tempalte", "unknown key"),
        ({"node": "wait_answer", "params": {"timeout": "5x"}}, "steps.a.params.timeout", BAD_DURATION),
        ({"node": "explicit_wait", "params": {"duration": "5x"}}, "steps.a.params.duration", BAD_DURATION),
        ({"node": "explicity_wait", "params": {"duration": "5x"}}, "steps.a.params.duration", BAD_DURATION),
        (
            {"node": "webhook", "params": {"url": "not a url"}},
            "steps.a.params.url",
            "Input should be a valid URL, relative URL without a base",
        ),
        (
            {"node": "webhook", "params": {"max_attempts": 0}},
            "steps.a.params.max_attempts",
            "Input should be greater than or equal to 1",
        ),
        (
            {"node": "send_message", "params": {"template": "Hi {{ customer.name"}},
            "steps.a.params.template",
            "template syntax error on template line 1: unexpected end of template, expected 'end of print statement'.",
        ),
        (
            {"node": "notify_creator", "params": {"template": "ok\n{% if x %}never closed"}},
            "steps.a.params.template",
            "template syntax error on template line 2: Unexpected end of template. Jinja was looking for the"
            " following tags: 'elif' or 'else' or 'endif'. The innermost block that needs to be closed is 'if'.",
        ),
    ],
    ids=[
        "unknown-param",
        "wait_answer-timeout",
        "explicit_wait-duration",
        "alias-duration",
        "webhook-url",
        "webhook-max_attempts",
        "send_message-template",
        "notify_creator-template-line",
    ],
)
def test_definition_params_are_checked_by_the_node(step: dict[str, Any], key: str, message: str) -> None:
    assert errors({"start_step": "a", "steps": {"a": step}}) == [Problem(key=key, message=message)]


def test_definition_reports_every_problem_at_once() -> None:
    data = seed(step_1={"node": "nope"}, step_4={"go_to": "ghost"}, step_2={"params": {"timeout": "5x"}})
    assert {p.key for p in errors(data)} == {"steps.step_1.node", "steps.step_4.go_to", "steps.step_2.params.timeout"}


def test_definition_explicity_wait_alias_is_accepted() -> None:
    definition, problems = parse_definition(one_step(node="explicity_wait", params={"duration": "90s"}))
    assert problems == []
    assert definition is not None
    assert definition.steps["a"].node == "explicity_wait"


@pytest.mark.parametrize(
    ("node", "event"),
    [
        ("send_message", "timeout"),
        ("notify_creator", "not_satisfied"),
        ("explicit_wait", "timeout"),
        ("webhook", "timeout"),
    ],
    ids=["send_message-timeout", "notify_creator-not_satisfied", "explicit_wait-timeout", "webhook-timeout"],
)
def test_definition_condition_on_an_event_the_node_never_gives_warns(node: str, event: str) -> None:
    data = {"start_step": "a", "steps": {"a": {"node": node, "condition": {event: "b"}}, "b": {"node": "send_message"}}}
    definition, problems = parse_definition(data)
    assert definition is not None
    assert problems == [
        Problem(key=f"steps.a.condition.{event}", message=f"node {node!r} never gives condition_{event}", warning=True)
    ]


def test_definition_webhook_not_satisfied_condition_does_not_warn() -> None:
    data = {
        "start_step": "a",
        "steps": {"a": {"node": "webhook", "condition": {"not_satisfied": "b"}}, "b": {"node": "send_message"}},
    }
    assert parse_definition(data)[1] == []


def test_definition_unknown_step_key_is_refused() -> None:
    assert errors(seed(step_1={"goto": "step_2"})) == [Problem(key="steps.step_1.goto", message="unknown key")]


def test_parse_definition_returns_definition_with_warnings() -> None:
    data = seed(orphan={"node": "send_message"})
    definition, problems = parse_definition(data)
    assert definition == WorkflowDefinition.model_validate(data)
    assert problems == [Problem(key="steps.orphan", message="unreachable from start_step 'step_1'", warning=True)]


@pytest.mark.parametrize(
    ("step", "event", "expected"),
    [
        ("step_1", EventType.SATISFIED, "step_2"),
        ("step_1", EventType.TIMEOUT, "step_2"),
        ("step_2", EventType.SATISFIED, "step_3"),
        ("step_2", EventType.TIMEOUT, "step_4"),
        ("step_2", EventType.NOT_SATISFIED, None),
        ("step_3", EventType.SATISFIED, None),
        ("step_4", EventType.NOT_SATISFIED, "step_5"),
        ("step_6", EventType.SATISFIED, None),
    ],
    ids=[
        "go_to",
        "go_to-any-event",
        "condition-satisfied",
        "condition-timeout",
        "condition-unrouted-ends",
        "leaf-ends",
        "webhook-go_to",
        "last-step-ends",
    ],
)
def test_step_next_step_follows_seed_semantics(
    seed_definition: WorkflowDefinition, step: str, event: EventType, expected: str | None
) -> None:
    assert seed_definition.steps[step].next_step(event) == expected


def test_step_next_step_condition_wins_then_go_to_fallback() -> None:
    definition = WorkflowDefinition.model_validate(
        {
            "start_step": "a",
            "steps": {
                "a": {"node": "wait_answer", "go_to": "c", "condition": {"satisfied": "b"}},
                "b": {"node": "send_message"},
                "c": {"node": "send_message"},
            },
        }
    )
    step = definition.steps["a"]
    assert [step.next_step(e) for e in EventType] == ["b", "c", "c"]


def test_step_empty_go_to_means_end() -> None:
    definition = WorkflowDefinition.model_validate(one_step(go_to="", condition={"satisfied": ""}))
    assert definition.steps["a"].next_step(EventType.SATISFIED) is None
    assert definition.steps["a"].edges() == []


def test_definition_version_equal_for_equal_definitions() -> None:
    shuffled = json.loads(json.dumps(SEED))
    shuffled = {"steps": dict(reversed(list(shuffled["steps"].items()))), "start_step": shuffled["start_step"]}
    shuffled["steps"]["step_2"] = {"condition": {"timeout": "step_4", "satisfied": "step_3"}, "node": "wait_answer"}
    from_json = WorkflowDefinition.model_validate_json(json.dumps(shuffled))
    from_dict = WorkflowDefinition.model_validate(SEED)
    assert from_json.version == from_dict.version
    assert re.fullmatch(r"[0-9a-f]{12}", from_dict.version)


@pytest.mark.parametrize(
    "change",
    [
        {"step_2": {"params": {"timeout": "2m"}}},
        {"step_3": {"node": "send_message"}},
        {"step_4": {"go_to": "step_6"}},
        {"step_6": {"params": {"template": "bye"}}},
    ],
    ids=["param", "node", "go_to", "template"],
)
def test_definition_version_changes_with_content(change: dict[str, Any]) -> None:
    data = seed(step_2={"params": {"timeout": "1m"}})
    base = WorkflowDefinition.model_validate(data)
    for name, update in change.items():
        data["steps"][name].update(update)
    changed = WorkflowDefinition.model_validate(data)
    assert base.version != changed.version


def test_definition_reachable_steps_of_seed(seed_definition: WorkflowDefinition) -> None:
    assert reachable_steps(seed_definition) == set(SEED["steps"])


# --- property tests: cycle detection against an independent oracle ------------------------------------------------

NAMES = [f"s{i}" for i in range(8)]


@st.composite
def step_graphs(draw: st.DrawFn) -> dict[str, Any]:
    names = NAMES[: draw(st.integers(min_value=1, max_value=8))]
    targets = st.one_of(st.none(), st.sampled_from([*names, "ghost"]))
    steps: dict[str, Any] = {}
    for name in names:
        step: dict[str, Any] = {"node": draw(st.sampled_from(["send_message", "wait_answer"]))}
        if (go_to := draw(targets)) is not None:
            step["go_to"] = go_to
        if draw(st.booleans()):
            condition = {k: t for k in ("satisfied", "not_satisfied", "timeout") if (t := draw(targets)) is not None}
            step["condition"] = condition
        steps[name] = step
    start = draw(st.one_of(st.sampled_from(names), st.just("ghost")))
    return {"start_step": start, "steps": steps}


def _successors(data: dict[str, Any], name: str) -> set[str]:
    step = data["steps"][name]
    out = {step.get("go_to"), *step.get("condition", {}).values()}
    return {t for t in out if t in data["steps"]}


def _reachable_from(data: dict[str, Any], starts: set[str]) -> set[str]:
    seen: set[str] = set()
    todo = deque(s for s in starts if s in data["steps"])
    while todo:
        name = todo.popleft()
        if name not in seen:
            seen.add(name)
            todo.extend(_successors(data, name))
    return seen


def _oracle_has_reachable_cycle(data: dict[str, Any]) -> bool:
    reachable = _reachable_from(data, {data["start_step"]})
    return any(name in _reachable_from(data, _successors(data, name)) for name in reachable)


@settings(max_examples=300, deadline=None)
@given(step_graphs())
def test_definition_cycle_reported_iff_reachable_from_start(data: dict[str, Any]) -> None:
    definition = WorkflowDefinition.model_validate(data)
    reported = any("cycle" in p.message for p in validate_definition(definition))
    assert reported == _oracle_has_reachable_cycle(data)


@settings(max_examples=300, deadline=None)
@given(step_graphs().filter(lambda d: d["start_step"] != "ghost"))
def test_find_cycles_reports_only_real_reachable_loops(data: dict[str, Any]) -> None:
    definition = WorkflowDefinition.model_validate(data)
    reachable = _reachable_from(data, {data["start_step"]})
    for key, message in find_cycles(definition):
        assert message.startswith("cycle: ")
        loop = message.removeprefix("cycle: ").split(" → ")
        assert set(loop) <= reachable
        assert loop[0] == loop[-1]
        assert all(b in _successors(data, a) for a, b in pairwise(loop))
        # The key names the edge that closes the loop, from its last step back to its first.
        closing_step, edge = re.fullmatch(r"steps\.([^.]+)\.(.+)", key).groups()  # type: ignore[union-attr]
        assert closing_step == loop[-2]
        target = data["steps"][closing_step].get("go_to") if edge == "go_to" else None
        if edge.startswith("condition."):
            target = data["steps"][closing_step]["condition"][edge.removeprefix("condition.")]
        assert target == loop[0]


# exit_on


SEED_VERSION = "cf4d3c3f18db"
"""The seed's version before `exit_on` existed: flows and schedules already carry it (`DefinitionVersion`)."""


def test_definition_exit_on_default_keeps_older_versions() -> None:
    assert WorkflowDefinition.model_validate(SEED).version == SEED_VERSION
    assert WorkflowDefinition.model_validate({**SEED, "exit_on": []}).version == SEED_VERSION


def test_definition_exit_on_changes_the_version_and_ignores_order_and_repeats() -> None:
    once = WorkflowDefinition.model_validate({**SEED, "exit_on": ["cart-converted"]})
    twice = WorkflowDefinition.model_validate({**SEED, "exit_on": ["cart-converted", "cart-converted"]})
    assert once.exit_on == ["cart-converted"]
    assert once.version == twice.version != SEED_VERSION
    assert parse_definition({**SEED, "exit_on": ["cart-converted"]})[1] == []


@pytest.mark.parametrize(
    ("exit_on", "message"),
    [
        (["cart-converted", "cart-bought"], "unknown signal 'cart-bought' (exit_on accepts: cart-converted)"),
        (["client-answered"], "unknown signal 'client-answered' (exit_on accepts: cart-converted)"),
        ("cart-converted", "Input should be a valid list"),
    ],
    ids=["unknown", "not-an-exit-signal", "not-a-list"],
)
def test_definition_exit_on_unknown_signal_is_an_error(exit_on: Any, message: str) -> None:
    assert errors({**SEED, "exit_on": exit_on}) == [Problem(key="exit_on", message=message)]


def test_campaign_exit_on_error_is_located_under_workflow(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[campaign]\nid = "c"\n\n[schedule]\ncron = ["0 * * * *"]\n\n'
        '[workflow]\nstart_step = "a"\nexit_on = ["cart-bought"]\n\n[workflow.steps.a]\nnode = "send_message"\n',
        encoding="utf-8",
    )
    campaign, problems = load_campaign(path)
    assert campaign is None
    assert [(p.line, p.key, p.message) for p in problems] == [
        (9, "workflow.exit_on", "unknown signal 'cart-bought' (exit_on accepts: cart-converted)")
    ]


def test_definition_without_exit_on_serializes_as_before() -> None:
    """No `exit_on` key while empty: flow inputs and schedule actions stay readable by workers without the field,
    and `CampaignSha256` (a hash of the dump) does not change for campaigns that do not use it."""
    assert "exit_on" not in WorkflowDefinition.model_validate(SEED).model_dump(mode="json")
    with_exit = WorkflowDefinition.model_validate({**SEED, "exit_on": ["cart-converted"]})
    assert with_exit.model_dump(mode="json")["exit_on"] == ["cart-converted"]
