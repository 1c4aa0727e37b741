"""Reply intents: normalizing and matching phrases, their validation, the branches a flow takes on the
time-skipping server (and what it records), the graph, and `simulate` with a reply and with every path."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from scheduler.campaigns.campaign import load_campaign
from scheduler.campaigns.graph import mermaid, svg
from scheduler.config import Settings
from scheduler.delivery.channels import Outbox
from scheduler.flow.attributes import CLIENT_ANSWERED, NO_INTENT, REPLY_INTENT
from scheduler.flow.definition import WorkflowDefinition
from scheduler.flow.intents import match_intent, normalize
from scheduler.flow.models import FlowInput, flow_input
from scheduler.flow.signals import CLIENT_ANSWERED_SIGNAL, Reply
from scheduler.worker import make_worker
from tests.helpers import ROOT
from tests.helpers.campaigns import SEED, line_in, load_workflow
from tests.helpers.cli import scheduler
from tests.helpers.flows import reaches, start_flow_input

EXAMPLE = ROOT / "campaigns" / "sms_reply_intents.toml"
FULL_WIDTH_YES = "\uff39\uff25\uff33"
"""YES in full-width letters, as some phone keyboards type it."""
INTENTS = {"yes": ["yes", "y", "sure", "ok", "send it", "👍"], "later": ["later", "not now", "tomorrow"]}
"""The example campaign's intents, in its order."""


# Normalizing and matching


@pytest.mark.parametrize(
    ("reply", "intent"),
    [
        ("yes", "yes"),
        ("YES", "yes"),
        ("  Yes!!! ", "yes"),
        ("yes please", "yes"),
        ("yes, please", "yes"),
        ("yesterday", None),
        ("y", "yes"),
        ("yo", None),
        (FULL_WIDTH_YES, "yes"),  # NFKC makes it plain
        ("👍", "yes"),
        ("👍👍", "yes"),
        ("Send it.", "yes"),
        ("send items", None),
        ("Not now, thanks", "later"),
        ("notnow", None),
        ("stop yes", None),  # only a phrase at the start counts
        ("Is the blue one in stock?", None),
        ("", None),
        (None, None),
    ],
)
def test_match_intent(reply: str | None, intent: str | None) -> None:
    assert match_intent(reply, INTENTS) == intent


def test_normalize_keeps_symbols_and_inner_punctuation() -> None:
    assert normalize("  ¡Sí, claro!  ") == "sí, claro"
    assert normalize("«👍»") == "👍"
    assert normalize("Straße") == "strasse"
    assert normalize("?!") == ""


def test_the_first_intent_in_order_wins() -> None:
    assert match_intent("send it now", {"send": ["send"], "send_it": ["send it"]}) == "send"
    assert match_intent("send it now", {"send_it": ["send it"], "send": ["send"]}) == "send_it"


# The definition

LISTEN = """\
[workflow]
start_step = "listen"

[workflow.steps.listen]
node = "wait_answer"
params = { timeout = "4h" }
condition = { satisfied = "owner" }

[workflow.steps.listen.intents.yes]
match = ["yes", "sure"]
go_to = "link"

[workflow.steps.listen.intents.later]
match = ["later"]
go_to = "owner"

[workflow.steps.link]
node = "send_message"

[workflow.steps.owner]
node = "notify_creator"
"""


load = partial(load_workflow, cid="intents")
line_of = partial(line_in, cid="intents")


def test_the_intents_campaign_loads_and_intent_edges_are_edges(tmp_path: Path) -> None:
    campaign, problems = load(tmp_path, LISTEN)
    assert problems == []
    assert campaign.workflow.steps["listen"].edges() == [
        ("condition.satisfied", "owner"),
        ("intents.yes.go_to", "link"),
        ("intents.later.go_to", "owner"),
    ]


def test_definitions_without_intents_dump_and_version_as_before() -> None:
    definition = WorkflowDefinition.model_validate(SEED)
    assert all("intents" not in step for step in definition.model_dump(mode="json")["steps"].values())
    assert definition.version == "cf4d3c3f18db"  # as before intents existed


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            'go_to = "link"',
            'go_to = "lnk"',
            "workflow.steps.listen.intents.yes.go_to: unknown step 'lnk'",
        ),
        (
            'match = ["yes", "sure"]',
            'match = ["yes", "Stop!"]',
            "workflow.steps.listen.intents.yes.match.1: phrase 'Stop!' is an opt-out or HELP keyword",
        ),
        (
            'match = ["yes", "sure"]',
            'match = ["yes", "help"]',
            "workflow.steps.listen.intents.yes.match.1: phrase 'help' is an opt-out or HELP keyword",
        ),
        (
            'match = ["later"]',
            'match = ["later", "SURE."]',
            "workflow.steps.listen.intents.later.match.1: phrase 'SURE.' is also intent 'yes''s: a phrase picks one",
        ),
        (
            'match = ["later"]',
            'match = ["later", "!?"]',
            "workflow.steps.listen.intents.later.match.1: phrase '!?': 1 to 64 characters",
        ),
        (
            'match = ["later"]',
            f'match = ["later", "{"x" * 65}"]',
            f"workflow.steps.listen.intents.later.match.1: phrase '{'x' * 20}…': 1 to 64 characters",
        ),
        ('match = ["later"]', "match = []", "workflow.steps.listen.intents.later.match: 0 phrases: an intent has 1"),
        (
            'match = ["later"]',
            "match = [" + ", ".join(f'"w{i}"' for i in range(101)) + "]",
            "workflow.steps.listen.intents.later.match: 101 phrases: an intent has 1 to 100",
        ),
        (
            "[workflow.steps.listen.intents.later]",
            '[workflow.steps.listen.intents."not now"]',
            "workflow.steps.listen.intents.not now: intent name 'not now': letters, digits",
        ),
        (
            'match = ["later"]',
            'match = "later"',
            "workflow.steps.listen.intents.later.match: Input should be a valid list",
        ),
        (
            'go_to = "link"',
            'go_to = "link"\nregex = "y.*"',
            "workflow.steps.listen.intents.yes.regex: unknown key",
        ),
        (
            "[workflow.steps.owner]",
            '[workflow.steps.owner]\ngo_to = "listen"',
            "workflow.steps.owner.go_to: cycle: listen → owner → listen",
        ),
    ],
    ids=[
        "unknown-go_to",
        "opt-out",
        "help",
        "shared",
        "empty",
        "too-long",
        "none",
        "too-many",
        "name",
        "not-a-list",
        "no-regex",
        "cycle",
    ],
)
def test_intent_problems_name_file_line_and_key(tmp_path: Path, old: str, new: str, message: str) -> None:
    workflow = LISTEN.replace(old, new)
    assert workflow != LISTEN
    campaign, problems = load(tmp_path, workflow)
    assert campaign is None
    (problem,) = [p for p in problems if ": warning: " not in p]
    line = line_of(new.splitlines()[-1], workflow)
    assert problem.startswith(f"{line}: "), problem
    assert message in problem, problem


def test_a_phrase_that_is_the_steps_own_opt_out_keyword_is_an_error(tmp_path: Path) -> None:
    workflow = LISTEN.replace('timeout = "4h" }', 'timeout = "4h", opt_out_keywords = ["LATER"] }')
    _, problems = load(tmp_path, workflow)
    line = line_of('match = ["later"]', workflow)
    assert problems == [
        f"{line}: workflow.steps.listen.intents.later.match.0: phrase 'later' is an opt-out or HELP keyword: such a"
        " reply never reaches an intent"
    ]


def test_an_opt_in_keyword_is_a_phrase_like_any_other(tmp_path: Path) -> None:
    """YES and START reach flows as replies (the service lifts the opt-out, then passes them on)."""
    _, problems = load(tmp_path, LISTEN.replace('match = ["later"]', 'match = ["later", "start"]'))
    assert problems == []


def test_an_intent_every_phrase_of_which_an_earlier_one_catches_warns(tmp_path: Path) -> None:
    workflow = LISTEN.replace('match = ["later"]', 'match = ["sure thing", "yes later"]')
    campaign, problems = load(tmp_path, workflow)
    assert campaign is not None
    line = line_of("[workflow.steps.listen.intents.later]", workflow)
    assert problems == [
        f"{line}: workflow.steps.listen.intents.later: warning: every phrase starts with an earlier intent's: this"
        " intent is never taken"
    ]


def test_intents_only_on_wait_answer(tmp_path: Path) -> None:
    workflow = LISTEN + '\n[workflow.steps.link.intents.x]\nmatch = ["x"]\ngo_to = "owner"\n'
    _, problems = load(tmp_path, workflow)
    line = line_of("[workflow.steps.link.intents.x]", workflow)
    assert problems == [f"{line}: workflow.steps.link.intents.x: only a wait_answer step has intents"]


# The graph


def test_graph_labels_each_intent_edge_with_its_name() -> None:
    campaign, _ = load_campaign(EXAMPLE)
    chart = mermaid(campaign.workflow)
    assert "    listen -->|yes| send_link\n" in chart
    assert "    listen -->|later| wait_a_day\n" in chart
    assert "    listen -->|condition_satisfied| to_owner\n" in chart
    picture = svg(campaign.workflow)
    assert all(f">{label}</text>" in picture for label in ("yes", "later", "satisfied"))


# Flows

CUSTOMER = {"id": "c1", "name": "Ada", "phone": "+15550001"}
CART = {"id": "cart-7", "url": "https://shop.example/cart/7"}


def example_flow() -> FlowInput:
    campaign, problems = load_campaign(EXAMPLE)
    assert campaign is not None, problems
    return flow_input(campaign, customer=CUSTOMER, cart=CART, quiet_hours="")


async def run_flow(
    env: WorkflowEnvironment,
    settings: Settings,
    task_queue: str,
    flow: FlowInput,
    replies: list[str],
    *,
    in_step: str = "listen",
    before_wait: bool = False,
) -> tuple[Any, Any, list[dict[str, Any]], list[str]]:
    """Run `flow`, the `replies` coming in `in_step` (or with the start: `before_wait`); its result, search
    attributes, memo steps and the steps that sent messages."""
    async with make_worker(env.client, settings, task_queue=task_queue):
        if before_wait:
            first, *rest = replies
            handle = await start_flow_input(
                env.client,
                flow,
                task_queue,
                start_signal=CLIENT_ANSWERED_SIGNAL,
                start_signal_args=[Reply(reply_id="r0", text=first)],
            )
        else:
            rest = replies
            handle = await start_flow_input(env.client, flow, task_queue)
            if rest:
                await reaches(handle, in_step)
        for i, text in enumerate(rest, 1):
            await handle.signal(CLIENT_ANSWERED_SIGNAL, Reply(reply_id=f"r{i}", text=text))
        result = await handle.result()
    description = await handle.describe()
    steps = (await description.memo())["steps"]
    sent = [line["step"] for line in Outbox(settings.channels.outbox).read()]
    return result, description.typed_search_attributes, steps, sent


@pytest.mark.parametrize(
    ("reply", "path", "intent"),
    [
        ("Yes please", ["ask", "listen", "send_link"], "yes"),
        (FULL_WIDTH_YES, ["ask", "listen", "send_link"], "yes"),
        ("👍", ["ask", "listen", "send_link"], "yes"),
        ("not now!", ["ask", "listen", "wait_a_day", "reminder"], "later"),
    ],
)
async def test_an_intent_takes_its_branch_and_is_recorded(
    ts_env: WorkflowEnvironment, settings: Settings, task_queue: str, reply: str, path: list[str], intent: str
) -> None:
    result, attributes, steps, sent = await run_flow(ts_env, settings, task_queue, example_flow(), [reply])
    assert (result.path, result.outcome) == (path, "completed")
    assert attributes.get(REPLY_INTENT) == intent  # written with the end: the branch ends with no wait
    assert attributes.get(CLIENT_ANSWERED) is True
    assert steps[1] == {**steps[1], "step": "listen", "event": "condition_satisfied", "intent": intent}
    assert "reply" not in steps[1]
    assert sent == ["ask", path[-1]]


async def test_a_reply_no_intent_matches_is_satisfied_and_kept_for_the_owner(
    ts_env: WorkflowEnvironment, settings: Settings, task_queue: str
) -> None:
    text = "yesterday I asked: is the blue one in stock? " * 5
    result, attributes, steps, sent = await run_flow(ts_env, settings, task_queue, example_flow(), [text])
    assert result.path == ["ask", "listen", "to_owner"]
    assert attributes.get(REPLY_INTENT) == NO_INTENT
    assert "intent" not in steps[1]
    assert steps[1]["reply"] == text[:160]
    assert sent == ["ask", "to_owner"]


async def test_no_reply_times_out_and_sets_no_intent(
    ts_env: WorkflowEnvironment, settings: Settings, task_queue: str
) -> None:
    result, attributes, steps, sent = await run_flow(ts_env, settings, task_queue, example_flow(), [])
    assert result.path == ["ask", "listen", "nudge"]
    assert attributes.get(REPLY_INTENT) is None
    assert steps[1]["event"] == "condition_timeout"
    assert sent == ["ask", "nudge"]


async def test_stop_opts_out_before_any_intent_and_stop_yes_is_no_keyword(
    ts_env: WorkflowEnvironment, settings: Settings, task_queue: str
) -> None:
    """Only a reply that is exactly a keyword opts out; "stop yes" starts with no intent's phrase (none may be
    "stop"), so it is an answer that no intent matched."""
    result, attributes, _, sent = await run_flow(ts_env, settings, task_queue, example_flow(), ["STOP"])
    assert (result.path, result.outcome) == (["ask", "listen"], "opted_out")
    assert attributes.get(REPLY_INTENT) is None
    assert sent == ["ask"]

    result, attributes, steps, _ = await run_flow(ts_env, settings, f"{task_queue}-2", example_flow(), ["stop yes"])
    assert (result.path, result.outcome) == (["ask", "listen", "to_owner"], "completed")
    assert attributes.get(REPLY_INTENT) == NO_INTENT
    assert steps[1]["reply"] == "stop yes"


async def test_a_reply_before_the_wait_counts_for_it(
    ts_env: WorkflowEnvironment, settings: Settings, task_queue: str
) -> None:
    result, attributes, _, _ = await run_flow(ts_env, settings, task_queue, example_flow(), ["later"], before_wait=True)
    assert result.path == ["ask", "listen", "wait_a_day", "reminder"]
    assert attributes.get(REPLY_INTENT) == "later"


TWO_WAITS = {
    "start_step": "pause",
    "steps": {
        "pause": {"node": "explicit_wait", "params": {"duration": "1m"}, "go_to": "first"},
        "first": {
            "node": "wait_answer",
            "params": {"timeout": "1h"},
            "condition": {"satisfied": "second", "timeout": "second"},
            "intents": {"yes": {"match": ["yes"], "go_to": "second"}},
        },
        "second": {
            "node": "wait_answer",
            "params": {"timeout": "1h"},
            "condition": {"satisfied": "owner"},
            "intents": {"yes": {"match": ["yes"], "go_to": "link"}},
        },
        "link": {"node": "send_message"},
        "owner": {"node": "notify_creator"},
    },
}


async def test_two_waits_in_a_row_a_reply_counts_for_one(
    ts_env: WorkflowEnvironment, settings: Settings, task_queue: str
) -> None:
    """Two replies before the first wait: the first that matches an intent picks it, and neither is left over for
    the second wait, which times out (the flow ends: no timeout edge)."""
    flow = FlowInput(
        definition=WorkflowDefinition.model_validate(TWO_WAITS),
        customer=CUSTOMER,
        owner="owner@example.com",
    )
    result, attributes, steps, sent = await run_flow(
        ts_env, settings, task_queue, flow, ["hmm", "yes please"], in_step="pause"
    )
    assert result.path == ["pause", "first", "second"]
    assert [(s["step"], s["event"], s.get("intent")) for s in steps] == [
        ("pause", "condition_satisfied", None),
        ("first", "condition_satisfied", "yes"),
        ("second", "condition_timeout", None),
    ]
    assert attributes.get(REPLY_INTENT) == "yes"
    assert sent == []


# Simulating


async def test_simulate_a_reply_takes_its_intent() -> None:
    run = await scheduler("simulate", EXAMPLE, "--reply", "yes please", "--json")
    assert run.code == 0, run
    (path,) = json.loads(run.stdout)
    assert path["path"] == ["ask", "listen", "send_link"]
    assert path["steps"][1]["intent"] == "yes"

    # With `=`, the text follows a step's name: a step that is no wait_answer is refused.
    assert (await scheduler("simulate", EXAMPLE, "--reply", "ask=yes")).code == 1
    named = await scheduler("simulate", EXAMPLE, "--reply", "listen=tomorrow@1h", "--json")
    assert named.code == 0, named
    assert json.loads(named.stdout)[0]["path"] == ["ask", "listen", "wait_a_day", "reminder"]


async def test_simulate_all_paths_covers_every_intent_no_intent_and_timeout() -> None:
    run = await scheduler("simulate", EXAMPLE, "--all-paths", "--json")
    assert run.code == 0, run
    by_choice = {tuple(p["choices"]): p for p in json.loads(run.stdout)}
    assert {choice: p["path"][-1] for choice, p in by_choice.items()} == {
        ("listen=answered:yes",): "send_link",
        ("listen=answered:later",): "reminder",
        ("listen=answered",): "to_owner",
        ("listen=opted_out",): "listen",
        ("listen=timed_out",): "nudge",
    }
    assert by_choice["listen=answered",]["steps"][1]["reply"] == "Is the blue one in stock?"
