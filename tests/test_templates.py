"""Templates: the four variables, validation at `validate` time, missing data rendering empty, the sandbox,
its limits (at validation and at render), and the context and outcome sentence the activities render with."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from scheduler.delivery.activities import path_in_words, template_context
from scheduler.delivery.templates import TemplateLimitError, TemplateRenderError, compile_template, render
from scheduler.flow.definition import parse_definition
from scheduler.flow.models import ActivityInput
from scheduler.flow.nodes.notify_creator import DEFAULT_SUBJECT as NOTIFY_SUBJECT
from scheduler.flow.nodes.notify_creator import DEFAULT_TEMPLATE as NOTIFY_TEMPLATE
from scheduler.flow.nodes.send_message import DEFAULT_SUBJECT, DEFAULT_TEMPLATE
from scheduler.problems import Problem
from tests.helpers.cli import scheduler

EMPTY: dict[str, Any] = {"customer": {}, "cart": {}, "campaign": {}, "step": {}}


def problems(step: dict[str, Any]) -> list[Problem]:
    _, found = parse_definition({"start_step": "a", "steps": {"a": step}}, check_template=compile_template)
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
    assert problems(step) == [Problem(key="steps.a.params.template", message=message)]


def test_validate_subject_is_checked_like_the_template() -> None:
    assert problems({"node": "send_message", "params": {"subject": "{{ subject }}"}}) == [
        Problem(
            key="steps.a.params.subject",
            message="unknown template variable 'subject' (templates see campaign, cart, customer, step)",
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
    assert "'console', 'http', 'smtp' or 'twilio'" in found[0].message


# Limits: what validation refuses without data


def template_problems(template: str) -> list[str]:
    """The problems of a send_message step with `template`, validated against the clock."""
    started = time.monotonic()
    found = problems({"node": "send_message", "params": {"template": template}})
    assert time.monotonic() - started < 2, "validation must not compute what the template describes"
    assert {p.key for p in found} <= {"steps.a.params.template"}
    return [p.message for p in found]


@pytest.mark.parametrize(
    ("template", "message"),
    [
        (
            "{{ 'x' * 10**8 }}",
            "template line 1: str * int makes a value of 100,000,000 characters or items (the limit is 100,000)",
        ),
        (
            "{{ 7 ** (10 ** 7) }}",
            "template line 1: int ** int makes a number of 20,000,001 bits or more (the limit is 4,096)",
        ),
        (
            "Hi\n{{ customer.name | center(10 ** 9) }}",
            "template line 2: center: a width or count of 1,000,000,000 is over the limit of 100,000",
        ),
        (
            "{{ customer.name.ljust(1000000000) }}",
            "template line 1: ljust(): a width or count of 1,000,000,000 is over the limit of 100,000",
        ),
        (
            "{% for i in range(10 ** 9) %}x{% endfor %}",
            "template line 1: range() makes a value of 1,000,000,000 characters or items (the limit is 100,000)",
        ),
        (
            "{{ '{:>999999999}'.format(customer.name) }}",
            "template line 1: format(): a width or count of 999,999,999 is over the limit of 100,000",
        ),
        (
            "{{ '%0999999999d' % cart.total }}",
            "template line 1: '%' formatting: a width or count of 999,999,999 is over the limit of 100,000",
        ),
        (
            "{{ " + "9" * 2000 + " }}",
            "template line 1: a literal makes a number of 6,644 bits or more (the limit is 4,096)",
        ),
        ("Hi\n{{ " + "9" * 5000 + " }}", "template line 2: a number of more than 4,300 digits"),
        ("{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}", "template is nested too deeply"),
        (
            "{% for i in cart.items %}" * 21 + "{% endfor %}" * 21,
            "template is nested too deeply (too many statically nested blocks)",
        ),
        ("x" * 20_001, "template is 20,001 characters long (the limit is 20,000)"),
    ],
    ids=[
        "string-times",
        "power",
        "filter-width",
        "method-width",
        "range",
        "format-width",
        "percent-width",
        "big-literal",
        "unreadable-literal",
        "nested-parentheses",
        "nested-loops",
        "too-long",
    ],
)
def test_validate_refuses_bombs_it_can_see_quickly(template: str, message: str) -> None:
    assert template_problems(template) == [message]


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{ 'a'.format }}", "template line 1: prints the method 'format' of a str: call it, format(…)"),
        ("Hi\n{{ range }}", "template line 2: prints the function 'range'"),
        ("{{ cycler }}", "template line 1: prints the class 'cycler'"),
        ("{{ dict }}", "template line 1: prints the class 'dict'"),
        ("{% macro m() %}x{% endmacro %}{{ m }}", "template line 1: prints the macro 'm': call it, m(…)"),
        ("{{ range(3) }}", "template line 1: prints a range: add | list, or | join(', ')"),
        (
            "{{ cart.items | map(attribute='name') }}",
            "template line 1: prints an iterator (from | map): add | list, or | join(', ')",
        ),
        ("{{ 'Hi ' ~ 'a'.upper }}", "template line 1: prints the method 'upper' of a str: call it, upper(…)"),
    ],
    ids=["str-method", "global-function", "global-class", "dict", "macro", "range", "iterator", "joined"],
)
def test_validate_refuses_printing_python_objects(template: str, message: str) -> None:
    assert template_problems(template) == [f"{message} (a customer would see its Python repr)"]


def test_validate_lipsum_is_gone() -> None:
    """Paragraphs of lorem ipsum, as many as asked (or its repr): nothing a customer should get."""
    assert template_problems("{{ lipsum }}{{ lipsum(10 ** 6) }}") == [
        "unknown template variable 'lipsum' (templates see campaign, cart, customer, step)"
    ]


async def test_validate_cli_refuses_template_bombs_with_file_line_key(tmp_path: Path) -> None:
    (tmp_path / "bombs.toml").write_text(
        """\
[campaign]
id = "bombs"

[schedule]
cron = ["0 * * * *"]

[workflow]
start_step = "a"

[workflow.steps.a]
node = "send_message"
go_to = "b"
params = { template = "{{ 'x' * 10**8 }}" }

[workflow.steps.b]
node = "send_message"
go_to = "c"
params = { template = "{{ 7 ** (10 ** 7) }}" }

[workflow.steps.c]
node = "notify_creator"
params = { template = "{{ 'a'.format }}", subject = "Hi\\n{{ range }}" }
""",
        encoding="utf-8",
    )
    started = time.monotonic()
    run = await scheduler("validate", "bombs.toml", cwd=tmp_path)
    assert time.monotonic() - started < 20
    assert run.code == 1, run
    repr_ = "(a customer would see its Python repr)"
    assert run.stdout.splitlines() == [
        "bombs.toml:13: workflow.steps.a.params.template: template line 1: str * int makes a value of"
        " 100,000,000 characters or items (the limit is 100,000)",
        "bombs.toml:18: workflow.steps.b.params.template: template line 1: int ** int makes a number of"
        " 20,000,001 bits or more (the limit is 4,096)",
        "bombs.toml:22: workflow.steps.c.params.template: template line 1: prints the method 'format' of a str:"
        f" call it, format(…) {repr_}",
        f"bombs.toml:22: workflow.steps.c.params.subject: template line 2: prints the function 'range' {repr_}",
    ]


# Limits: what a render refuses

BOMB_DATA: dict[str, Any] = {
    **EMPTY,
    "customer": {"name": "Ann"},
    "cart": {"n": 10**8, "wide": "{:>100000000}", "star": "%*d", "items": ["mug", "tea"]},
}


@pytest.mark.parametrize(
    ("template", "message"),
    [
        (
            "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
            "(template line 1): more than 50,000 loop iterations and calls",
        ),
        (
            "{% macro m(n) %}\n{% if n %}{{ m(n - 1) }}{{ m(n - 1) }}{% endif %}\n{% endmacro %}\n{{ m(40) }}",
            "(template line 2): more than 50,000 loop iterations and calls",
        ),
        (
            "{{ 'x' * cart.n }}",
            "(template line 1): str * int makes a value of 100,000,000 characters or items (the limit is 100,000)",
        ),
        (
            "{{ 7 ** cart.n }}",
            "(template line 1): int ** int makes a number of 200,000,001 bits or more (the limit is 4,096)",
        ),
        (
            "{{ customer.name | center(cart.n) }}",
            "(template line 1): center: a width or count of 100,000,000 is over the limit of 100,000",
        ),
        (
            "{{ cart.wide.format(customer.name) }}",
            "(template line 1): format(): a width or count of 100,000,000 is over the limit of 100,000",
        ),
        ("{{ cart.star % (cart.n, 1) }}", "(template line 1): '%' formatting: write widths in the format, not '*'"),
        (
            "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
            "(template line 1): ~ makes a value of 131,072 characters or items (the limit is 100,000)",
        ),
        (
            "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set s %}{{ ns.s }}{{ ns.s }}{% endset %}"
            "{% set ns.s = s %}{% endfor %}",
            "(template line 1): a block makes a value of 131,072 characters or items (the limit is 100,000)",
        ),
    ],
    ids=[
        "nested-loops",
        "macro-recursion",
        "string-times",
        "power",
        "filter-width",
        "format",
        "percent",
        "tilde",
        "block",
    ],
)
def test_render_bombs_fail_quickly_with_the_limit_and_line(template: str, message: str) -> None:
    started = time.monotonic()
    with pytest.raises(TemplateLimitError) as caught:
        render(template, BOMB_DATA)
    assert time.monotonic() - started < 5
    assert str(caught.value) == f"template failed to render {message}"


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("Hi\n\n{% set f = 'a'.format %}{{ f }}", "(template line 3): prints the method 'format': call it, format(…)"),
        ("{{ customer.name.upper }}", "(template line 1): prints the method 'upper': call it, upper(…)"),
        ("{{ 'Hi ' ~ customer.name.upper }}", "(template line 1): ~ joins the method 'upper': call it, upper(…)"),
        ("{{ cart.items | reverse }}", "(template line 1): prints a list_reverseiterator: add | list, or | join(', ')"),
        ("{% set ns = namespace(a=1) %}{{ ns }}", "(template line 1): prints a Namespace object"),
    ],
    ids=["bound-later", "data-method", "joined", "iterator", "namespace"],
)
def test_render_refuses_printing_python_objects(template: str, message: str) -> None:
    with pytest.raises(TemplateRenderError) as caught:
        render(template, BOMB_DATA)
    assert str(caught.value) == f"template failed to render {message} (a customer would see its Python repr)"


def test_render_any_error_of_the_template_is_a_render_error_and_short() -> None:
    """Also a KeyError (`str.format` of a missing field), and the data it quotes is cut."""
    data = {**EMPTY, "cart": {"fmt": "{missing}", "long": "{" + "k" * 10_000 + "}"}}
    with pytest.raises(TemplateRenderError) as caught:
        render("Hi\n{{ cart.fmt.format() }}", data)
    assert str(caught.value) == "template failed to render (template line 2): 'missing'"
    with pytest.raises(TemplateRenderError) as caught:
        render("{{ cart.long.format() }}", data)
    assert str(caught.value) == "template failed to render (template line 1): '" + "k" * 499 + "…"


def test_render_data_prints_as_before() -> None:
    template = "{{ cart.items }} {{ cart.n }} {{ customer }} {{ cart.items | reverse | list }} {{ 'Hi ' ~ 3 }}"
    assert render(template, BOMB_DATA) == "['mug', 'tea'] 100000000 {'name': 'Ann'} ['tea', 'mug'] Hi 3"


def test_render_stops_at_max_length_as_the_text_streams_out() -> None:
    bomb = "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}"
    started = time.monotonic()
    with pytest.raises(
        TemplateLimitError, match=r"^template failed to render: the text is longer than 1,600 characters$"
    ):
        render(bomb, EMPTY, max_length=1_600)
    assert time.monotonic() - started < 2
    assert render("{{ 'x' * 1600 }}", EMPTY, max_length=1_600) == "x" * 1_600


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
def test_path_in_words_says_how_the_flow_got_here(node: str, event: str, reply: str | None, expected: str) -> None:
    inp = flow_input(path=["step_1", "step_2"], previous_node=node, previous_event=event, reply=reply)
    assert path_in_words(inp) == expected


def test_path_in_words_of_a_first_step() -> None:
    assert path_in_words(flow_input()) == "the flow started"


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
