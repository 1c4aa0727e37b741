"""Templates: the four variables, validation at `validate` time, missing data rendering empty, the sandbox,
and the context and outcome sentence the activities render with."""

from __future__ import annotations

from typing import Any

import pytest

from scheduler.activities import outcome, template_context
from scheduler.definition import DefinitionProblem, parse_definition
from scheduler.models import ActivityInput
from scheduler.nodes.notify_creator import DEFAULT_SUBJECT as NOTIFY_SUBJECT
from scheduler.nodes.notify_creator import DEFAULT_TEMPLATE as NOTIFY_TEMPLATE
from scheduler.nodes.send_message import DEFAULT_SUBJECT, DEFAULT_TEMPLATE
from scheduler.templates import TemplateRenderError, render

EMPTY: dict[str, Any] = {"customer": {}, "cart": {}, "campaign": {}, "step": {}}


def problems(step: dict[str, Any]) -> list[DefinitionProblem]:
    _, found = parse_definition({"start_step": "a", "steps": {"a": step}})
    return [p for p in found if not p.warning]


def flow_input(**fields: Any) -> ActivityInput:
    return ActivityInput(
        **{
            "workflow_id": "wf-1",
            "campaign_id": "spring",
            "campaign_name": "Spring sale",
            "owner": "growth@example.com",
            "step": "step_3",
            **fields,
        }
    )


# Missing data


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("Hi {{ customer.name }}!", "Hi !"),
        ("Hi {{ customer.name | default('there') }}!", "Hi there!"),
        ("Hi {{ customer.name or customer.id or 'friend' }}!", "Hi friend!"),
        ("[{{ customer.address.city.zip }}]", "[]"),
        ("[{{ customer['first name'] }}]", "[]"),
        ("[{{ cart.total * 2 }}][{{ 1 + cart.total }}][{{ cart.total | round }}][{{ -cart.total }}]", "[][][][]"),
        ("{% if cart.total > 100 %}big{% else %}small{% endif %}", "small"),
        ("{% for item in cart.items %}{{ item }}{% else %}no items{% endfor %}", "no items"),
        ("{{ customer.name | upper }}|{{ cart.items | length }}", "|0"),
    ],
    ids=["plain", "default", "or-chain", "nested", "item", "arithmetic", "comparison", "loop", "filters"],
)
def test_render_missing_field_renders_empty(template: str, expected: str) -> None:
    """One customer without a field must not fail that customer's flow."""
    assert render(template, EMPTY) == expected


def test_render_present_fields() -> None:
    context = {**EMPTY, "customer": {"name": "Ann"}, "cart": {"total": 21, "items": ["mug", "tea"]}}
    template = "{{ customer.name }}: {{ cart.total * 2 }} for {{ cart.items | join(', ') }}"
    assert render(template, context) == "Ann: 42 for mug, tea"


def test_render_data_of_the_wrong_type_is_a_render_error() -> None:
    with pytest.raises(TemplateRenderError, match="template failed to render"):
        render("{{ cart.total + 1 }}", {**EMPTY, "cart": {"total": "12.50"}})


# The sandbox


def test_render_sandbox_hides_python_internals() -> None:
    assert render("[{{ customer.__class__.__mro__ }}][{{ cart.items.__globals__ }}]", EMPTY) == "[][]"


def test_render_sandbox_cannot_change_the_flow_data() -> None:
    cart = {"items": ["mug"]}
    assert render("{{ cart.items.append('free tv') }}{{ cart.items.pop() }}", {**EMPTY, "cart": cart}) == ""
    assert cart == {"items": ["mug"]}


def test_render_dict_keys_win_over_dict_methods() -> None:
    """Customer and cart are JSON data: `cart.items` must be the items, never `dict.items`."""
    context = {**EMPTY, "customer": {"keys": "k"}, "cart": {"items": ["mug"]}}
    assert render("{{ customer.keys }} {{ cart.items | join }} [{{ customer.update }}] [{{ cart.get }}]", context) == (
        "k mug [] []"
    )


# Validation


@pytest.mark.parametrize(
    ("step", "message"),
    [
        (
            {"node": "send_message", "params": {"template": "Hi {{ name }}"}},
            "unknown template variable 'name' (templates see campaign, cart, customer, step)",
        ),
        (
            {"node": "notify_creator", "params": {"template": "{{ workflow_id }} of {{ campaign_id }}"}},
            "unknown template variable 'campaign_id', 'workflow_id' (templates see campaign, cart, customer, step);"
            " use 'campaign.id' instead of 'campaign_id'; use 'step.workflow_id' instead of 'workflow_id'",
        ),
        (
            {"node": "send_message", "params": {"template": "{% for i in items %}{{ i }}{% endfor %}"}},
            "unknown template variable 'items' (templates see campaign, cart, customer, step)",
        ),
    ],
    ids=["unknown", "old-names-with-hint", "loop-source"],
)
def test_validate_unknown_template_variable_is_an_error(step: dict[str, Any], message: str) -> None:
    assert problems(step) == [DefinitionProblem("steps.a.params.template", message)]


def test_validate_subject_is_checked_like_the_template() -> None:
    assert problems({"node": "send_message", "params": {"subject": "{{ subject }}"}}) == [
        DefinitionProblem(
            "steps.a.params.subject",
            "unknown template variable 'subject' (templates see campaign, cart, customer, step)",
        )
    ]


@pytest.mark.parametrize(
    "template",
    [
        "{% for item in cart.items %}{{ loop.index }}. {{ item.name }}{% endfor %}",
        "{% set who = customer.name | default('you') %}Hi {{ who }}",
        "{{ campaign.name }} {{ step.name }} {{ step.outcome }} {{ range(3) | list }}",
    ],
    ids=["loop-variables", "set-variables", "all-four-and-globals"],
)
def test_validate_names_the_template_defines_are_allowed(template: str) -> None:
    assert problems({"node": "send_message", "params": {"template": template}}) == []


@pytest.mark.parametrize("channel", ["sms", "email", "Console"], ids=["sms", "email", "case-matters"])
def test_validate_unknown_channel_is_an_error(channel: str) -> None:
    found = problems({"node": "notify_creator", "params": {"channel": channel}})
    assert [p.key for p in found] == ["steps.a.params.channel"]
    assert "'console', 'http' or 'smtp'" in found[0].message


# What the activity renders with


def test_template_context_has_exactly_the_four_variables() -> None:
    inp = flow_input(customer={"id": "c1"}, cart={"id": "k1"}, path=["step_1", "step_2"], reply="yes")
    inp = inp.model_copy(update={"previous_node": "wait_answer", "previous_event": "condition_satisfied"})
    assert template_context(inp) == {
        "customer": {"id": "c1"},
        "cart": {"id": "k1"},
        "campaign": {"id": "spring", "name": "Spring sale", "owner": "growth@example.com"},
        "step": {
            "name": "step_3",
            "workflow_id": "wf-1",
            "path": ["step_1", "step_2"],
            "event": "condition_satisfied",
            "reply": "yes",
            "outcome": "the customer answered: yes",
        },
    }


@pytest.mark.parametrize(
    ("node", "event", "reply", "expected"),
    [
        ("wait_answer", "condition_satisfied", "yes please", "the customer answered: yes please"),
        ("wait_answer", "condition_satisfied", "", "the customer answered"),
        ("wait_answer", "condition_not_satisfied", "STOP", "the customer opted out (STOP)"),
        ("wait_answer", "condition_timeout", None, "the customer did not answer in time"),
        ("webhook", "condition_satisfied", None, "the webhook accepted the flow"),
        ("webhook", "condition_not_satisfied", None, "the webhook refused the flow"),
        ("explicit_wait", "condition_satisfied", None, "step step_2 (explicit_wait) gave condition_satisfied"),
    ],
    ids=["answered", "answered-empty", "opted-out", "timeout", "webhook-ok", "webhook-refused", "other"],
)
def test_outcome_says_how_the_flow_got_here(node: str, event: str, reply: str | None, expected: str) -> None:
    inp = flow_input(path=["step_1", "step_2"], previous_node=node, previous_event=event, reply=reply)
    assert outcome(inp) == expected


def test_outcome_of_a_first_step() -> None:
    assert outcome(flow_input()) == "the flow started"


def test_default_templates_render_for_a_bare_flow() -> None:
    """The seed's flows carry no customer, cart or campaign name: the defaults must still read well."""
    context = template_context(flow_input(campaign_name=""))
    assert render(DEFAULT_TEMPLATE, context) == (
        "Hi there, you left something in your cart. Reply to this message if you have a question."
    )
    assert render(DEFAULT_SUBJECT, context) == "Your cart is waiting"
    assert render(NOTIFY_TEMPLATE, context) == "spring: customer unknown: the flow started (flow wf-1)."
    assert render(NOTIFY_SUBJECT, context) == "[spring] the flow started"


def test_default_templates_render_with_data() -> None:
    inp = flow_input(
        customer={"id": "c1", "name": "Ann"},
        cart={"url": "https://shop.example/k1"},
        path=["step_1", "step_2"],
        previous_node="wait_answer",
        previous_event="condition_satisfied",
        reply="is it in blue?",
    )
    context = template_context(inp)
    assert render(DEFAULT_TEMPLATE, context) == (
        "Hi Ann, you left something in your cart: https://shop.example/k1."
        " Reply to this message if you have a question."
    )
    assert render(DEFAULT_SUBJECT, context) == "Spring sale"
    assert render(NOTIFY_TEMPLATE, context) == (
        "Spring sale: customer Ann: the customer answered: is it in blue? (flow wf-1)."
    )
