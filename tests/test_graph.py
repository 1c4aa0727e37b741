"""mermaid(): a definition as a flowchart, each edge labelled with the event types that take it."""

from __future__ import annotations

from scheduler.campaigns.campaign import load_campaign
from scheduler.campaigns.graph import mermaid
from scheduler.flow.definition import WorkflowDefinition
from tests.helpers import ROOT
from tests.helpers.campaigns import SEED

SHIPPED_CHART = """\
flowchart TD
    start([Start]) --> step_1
    step_1["step_1<br/>send_message"]
    step_2["step_2<br/>wait_answer"]
    step_3["step_3<br/>notify_creator"]
    step_4["step_4<br/>webhook"]
    step_5["step_5<br/>explicit_wait"]
    step_6["step_6<br/>send_message"]
    step_1 --> step_2
    step_2 -->|condition_satisfied| step_3
    step_2 -->|condition_timeout| step_4
    step_2 -->|condition_not_satisfied| end1([End])
    step_3 --> end2([End])
    step_4 --> step_5
    step_5 --> step_6
    step_6 --> end3([End])
"""


def test_mermaid_of_shipped_campaign() -> None:
    campaign, problems = load_campaign(ROOT / "campaigns" / "abandoned_cart.toml")
    assert problems == []
    assert campaign is not None
    assert mermaid(campaign.workflow) == SHIPPED_CHART


def test_mermaid_of_seed_draws_alias_under_canonical_name() -> None:
    chart = mermaid(WorkflowDefinition.model_validate(SEED))
    assert chart == SHIPPED_CHART  # the alias is drawn under its canonical name


def test_mermaid_go_to_fallback_takes_the_unrouted_events() -> None:
    definition = WorkflowDefinition.model_validate(
        {
            "start_step": "ask",
            "steps": {
                "ask": {"node": "wait_answer", "go_to": "remind", "condition": {"satisfied": "thanks"}},
                "remind": {"node": "send_message", "go_to": "hook"},
                "hook": {"node": "webhook", "condition": {"not_satisfied": "thanks"}},
                "thanks": {"node": "send_message"},
            },
        }
    )
    assert mermaid(definition) == (
        "flowchart TD\n"
        "    start([Start]) --> ask\n"
        '    ask["ask<br/>wait_answer"]\n'
        '    remind["remind<br/>send_message"]\n'
        '    hook["hook<br/>webhook"]\n'
        '    thanks["thanks<br/>send_message"]\n'
        "    ask -->|condition_satisfied| thanks\n"
        "    ask -->|condition_not_satisfied<br/>condition_timeout| remind\n"
        "    remind --> hook\n"
        "    hook -->|condition_not_satisfied| thanks\n"
        "    hook -->|condition_satisfied| end1([End])\n"
        "    thanks --> end2([End])\n"
    )


def test_mermaid_step_names_that_are_not_ids_get_safe_ids() -> None:
    definition = WorkflowDefinition.model_validate(
        {
            "start_step": "start",
            "steps": {
                "start": {"node": "send_message", "go_to": "thank-you"},
                "thank-you": {"node": "send_message", "go_to": "end"},
                "end": {"node": "send_message"},
            },
        }
    )
    assert mermaid(definition) == (
        "flowchart TD\n"
        "    start([Start]) --> s0\n"
        '    s0["start<br/>send_message"]\n'
        '    s1["thank-you<br/>send_message"]\n'
        '    s2["end<br/>send_message"]\n'
        "    s0 --> s1\n"
        "    s1 --> s2\n"
        "    s2 --> end1([End])\n"
    )


def test_mermaid_marks_missing_targets() -> None:
    definition = WorkflowDefinition.model_validate(
        {"start_step": "a", "steps": {"a": {"node": "send_message", "go_to": "ghost"}}}
    )
    assert mermaid(definition) == (
        "flowchart TD\n    start([Start]) --> a\n"
        '    a["a<br/>send_message"]\n    a --> missing_ghost["ghost (missing)"]\n'
    )


def test_svg_draws_each_step_with_its_count_and_link_one_arrow_per_pair_and_an_end_per_way_out() -> None:
    from scheduler.campaigns.graph import svg

    campaign, _ = load_campaign(ROOT / "campaigns" / "abandoned_cart.toml")
    assert campaign is not None
    picture = svg(campaign.workflow, counts={"step_2": 7}, links={"step_2": "http://ui/x?query=a%20b"})
    assert picture.startswith("<svg") and picture.endswith("</svg>")
    assert picture.count('<g class="step"') == 6
    assert '<a href="http://ui/x?query=a%20b" target="_blank"><g class="step" data-step="step_2">' in picture
    assert 'fill="#a60">7</text>' in picture  # step_2's count; the others show 0
    assert picture.count('fill="#aab">0</text>') == 5
    # step_2: satisfied → step_3, timeout → step_4, not_satisfied → an End; step_3 and step_6 end too
    assert picture.count(">End</text>") == 3
    assert picture.count("marker-end=") == 1 + 8  # Start's arrow and one per pair of boxes
    assert ">satisfied</text>" in picture and ">timeout</text>" in picture and ">not_satisfied</text>" in picture


def test_svg_escapes_step_names() -> None:
    from scheduler.campaigns.graph import svg

    definition = WorkflowDefinition.model_validate({"start_step": "<b>", "steps": {"<b>": {"node": "send_message"}}})
    assert "<b>" not in svg(definition).replace('"<b>"', "")
