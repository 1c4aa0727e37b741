"""The `split` step: sticky assignment by weight, its validation, a holdout that gets nothing, every place the
variant is recorded, its graph and its simulated paths."""

from __future__ import annotations

import json
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from scheduler.campaigns.graph import mermaid, svg
from scheduler.config import Settings
from scheduler.delivery.channels import Outbox
from scheduler.flow.attributes import MESSAGED, OUTCOME, VARIANT
from scheduler.flow.definition import WorkflowDefinition, experiment_steps
from scheduler.flow.models import FLOW_REVISION, FlowInput, FlowStatus
from scheduler.flow.nodes.split import assign_variant, assignment_unit
from scheduler.flow.signals import CLIENT_ANSWERED_SIGNAL, Reply
from scheduler.worker import make_worker
from tests.helpers import ROOT
from tests.helpers.campaigns import SPLIT, campaign_toml, line_in, load_workflow
from tests.helpers.cli import scheduler
from tests.helpers.flows import start_flow_input

WEIGHTS = {"friendly": 45, "discount": 45, "holdout": 10}
PINNED = (
    "friendly holdout discount friendly discount discount discount discount friendly discount "
    "friendly discount friendly friendly friendly discount friendly discount discount discount"
).split()
"""The variants of customers c0…c19 of campaign `split-test` in experiment `copy-2031-01`, computed once: a change of
the hash or of the layout of weights moves running experiments' customers to other variants, and fails here."""
SPLIT_DEFINITION = {
    "start_step": "copy_test",
    "steps": {
        "copy_test": {
            "node": "split",
            "params": {"experiment": "copy-2031-01"},
            "variants": {
                "friendly": {"weight": 45, "go_to": "msg_friendly"},
                "discount": {"weight": 45, "go_to": "msg_discount"},
                "holdout": {"weight": 10},
            },
        },
        "msg_friendly": {"node": "send_message", "params": {"template": "Your cart misses you, {{ customer.name }}"}},
        "msg_discount": {"node": "send_message", "params": {"template": "10% off your cart today"}},
    },
}
"""`SPLIT` as a definition."""


def units(n: int) -> list[str]:
    return [f"customer:c{i}" for i in range(n)]


# Assignment


def test_assignment_is_pinned() -> None:
    assert [assign_variant("split-test", "copy-2031-01", u, WEIGHTS) for u in units(20)] == PINNED


def test_assignment_is_the_same_in_another_process_with_another_hash_seed() -> None:
    """`hash()` of a string changes with PYTHONHASHSEED; the assignment must not."""
    code = (
        "import json; from scheduler.flow.nodes.split import assign_variant; "
        f"print(json.dumps([assign_variant('split-test', 'copy-2031-01', f'customer:c{{i}}', {WEIGHTS!r}) "
        "for i in range(20)]))"
    )
    for seed in ("1", "2"):
        env = {"PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert json.loads(out.stdout) == PINNED


def test_assignment_ignores_the_order_of_variants_and_depends_on_each_key() -> None:
    reordered = dict(reversed(WEIGHTS.items()))
    assert [assign_variant("split-test", "copy-2031-01", u, reordered) for u in units(20)] == PINNED
    for other in (("other", "copy-2031-01"), ("split-test", "copy-2031-02")):
        assert [assign_variant(*other, u, WEIGHTS) for u in units(20)] != PINNED


def test_assignment_proportions_match_the_weights_over_100000_ids() -> None:
    n = 100_000
    counts = dict.fromkeys(WEIGHTS, 0)
    for u in units(n):
        counts[assign_variant("c", "e", u, WEIGHTS)] += 1
    # Binomial standard deviation at 45 %: 157 flows; 4 of them (0.6 points) is far past chance.
    for name, weight in WEIGHTS.items():
        assert abs(counts[name] - n * weight / 100) < 4 * (n * 0.25) ** 0.5, counts


def test_ending_an_experiment_puts_everyone_in_the_winner() -> None:
    assert {assign_variant("c", "e", u, {"winner": 100}) for u in units(100)} == {"winner"}


def test_assignment_unit_is_the_customer_else_the_cart_else_the_flow() -> None:
    assert assignment_unit({"id": 42}, {"id": "k"}, "wf") == "customer:42"
    assert assignment_unit({"id": ""}, {"id": "k"}, "wf") == "cart:k"
    assert assignment_unit({}, {}, "wf") == "flow:wf"


# The definition


def test_steps_without_variants_dump_as_before() -> None:
    """Workers without the field forbid unknown keys: a step without variants must not carry an empty table."""
    data = WorkflowDefinition.model_validate(SPLIT_DEFINITION).model_dump(mode="json")
    assert "variants" not in data["steps"]["msg_friendly"]
    assert data["steps"]["copy_test"]["variants"]["holdout"] == {"weight": 10, "go_to": None}


def test_variant_edges_are_first_class() -> None:
    definition = WorkflowDefinition.model_validate(SPLIT_DEFINITION)
    assert definition.steps["copy_test"].edges() == [
        ("variants.friendly.go_to", "msg_friendly"),
        ("variants.discount.go_to", "msg_discount"),
    ]
    assert experiment_steps(definition) == {"copy-2031-01": "copy_test"}


load = partial(load_workflow, cid="split-test")
line_of = partial(line_in, cid="split-test")


def test_the_split_campaign_loads(tmp_path: Path) -> None:
    campaign, problems = load(tmp_path, SPLIT)
    assert problems == []
    assert campaign.workflow.steps["copy_test"].weights() == {"friendly": 45, "discount": 45, "holdout": 10}


HOLDOUT = "holdout = { weight = 10 }"
WEIGHT_RULE = "workflow.steps.copy_test.variants.holdout.weight: weight must be a positive whole number"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            'discount = { weight = 45, go_to = "msg_discount" }',
            'discount = { weight = 45, go_to = "msg_dicount" }',
            "workflow.steps.copy_test.variants.discount.go_to: unknown step 'msg_dicount'",
        ),
        ("holdout = { weight = 10 }", "holdout = { weight = 0 }", "weight must be a positive whole number, not 0"),
        ("holdout = { weight = 10 }", "holdout = { weight = 2.5 }", "weight must be a positive whole number, not 2.5"),
        (
            "holdout = { weight = 10 }",
            "holdout = { weight = true }",
            "weight must be a positive whole number, not True",
        ),
        (
            "holdout = { weight = 10 }",
            'holdout = { weight = "10" }',
            "weight must be a positive whole number, not '10'",
        ),
        ("holdout = { weight = 10 }", 'holdout = { go_to = "msg_friendly" }', "variants.holdout.weight: required key"),
        ("holdout = { weight = 10 }", "holdout = { weight = 10, goto = 1 }", "variants.holdout.goto: unknown key"),
        (
            HOLDOUT,
            '"hold out" = { weight = 10 }',
            "workflow.steps.copy_test.variants.hold out: variant name 'hold out': letters, digits",
        ),
        (
            'params = { experiment = "copy-2031-01" }',
            'params = { experiment = "copy:2031" }',
            "workflow.steps.copy_test.params.experiment: experiment 'copy:2031': letters, digits",
        ),
        (
            'params = { experiment = "copy-2031-01" }',
            'go_to = "msg_friendly"',
            "workflow.steps.copy_test.go_to: a split step goes on by its variants' go_to",
        ),
        (
            'params = { template = "10% off your cart today" }',
            'params = { template = "10% off your cart today" }\ngo_to = "copy_test"',
            "workflow.steps.msg_discount.go_to: cycle: copy_test → msg_discount → copy_test",
        ),
    ],
    ids=[
        "unknown-go_to",
        "zero",
        "fraction",
        "bool",
        "string",
        "no-weight",
        "unknown-key",
        "variant-name",
        "experiment-name",
        "go_to-on-split",
        "cycle",
    ],
)
def test_split_problems_name_file_line_and_key(tmp_path: Path, old: str, new: str, message: str) -> None:
    workflow = SPLIT.replace(old, new)
    assert workflow != SPLIT
    campaign, problems = load(tmp_path, workflow)
    assert campaign is None
    (problem,) = [p for p in problems if ": warning: " not in p]  # a step left unreachable warns besides
    line = line_of(new.splitlines()[-1], workflow)
    assert problem.startswith(f"{line}: "), problem
    assert message in problem, problem


def test_split_without_variants_and_variants_elsewhere_are_errors(tmp_path: Path) -> None:
    workflow = SPLIT.split("[workflow.steps.copy_test.variants]")[0]
    workflow += '[workflow.steps.msg]\nnode = "send_message"\nvariants = { a = { weight = 1 } }\n'
    _, problems = load(tmp_path, workflow)
    assert [p for p in problems if ": warning: " not in p] == [
        f"{line_of('[workflow.steps.copy_test]', workflow)}: workflow.steps.copy_test: a split step needs [variants]:"
        ' name = { weight = N, go_to = "step" }',
        f"{line_of('variants = { a = { weight = 1 } }', workflow)}: workflow.steps.msg.variants: only a split step has"
        " variants",
    ]


def test_more_than_ten_variants_is_an_error(tmp_path: Path) -> None:
    many = "".join(f"v{i} = {{ weight = 1 }}\n" for i in range(11))
    workflow = SPLIT.replace("holdout = { weight = 10 }\n", many)
    _, problems = load(tmp_path, workflow)
    line = line_of("[workflow.steps.copy_test.variants]", workflow)
    assert problems == [f"{line}: workflow.steps.copy_test.variants: 13 variants: a split has at most 10"]


def test_duplicate_experiment_and_unplain_step_name_are_errors(tmp_path: Path) -> None:
    second = """
[workflow.steps.again]
node = "split"
params = { experiment = "copy-2031-01" }
variants = { a = { weight = 1 } }

[workflow.steps."second test"]
node = "split"
variants = { a = { weight = 1 } }
"""
    workflow = SPLIT + second
    _, problems = load(tmp_path, workflow)
    dup = line_of('params = { experiment = "copy-2031-01" }', workflow)
    unplain = line_of('[workflow.steps."second test"]', workflow)
    assert [p for p in problems if ": warning: " not in p] == [
        f"{dup}: workflow.steps.again.params.experiment: experiment 'copy-2031-01' is already run by step 'copy_test':"
        " give each its own name",
        f"{unplain}: workflow.steps.second test: the step name 'second test': letters, digits, '_', '.', '-', at most"
        " 64 characters, starting with a letter or digit; or set params.experiment, which names the experiment",
    ]


# The graph


def test_graph_labels_variant_edges_with_name_and_weight_and_a_holdout_ends() -> None:
    definition = WorkflowDefinition.model_validate(SPLIT_DEFINITION)
    chart = mermaid(definition)
    assert "    copy_test -->|friendly (45)| msg_friendly\n" in chart
    assert "    copy_test -->|discount (45)| msg_discount\n" in chart
    assert "    copy_test -->|holdout (10)| end1([End])\n" in chart
    picture = svg(definition)
    assert all(f">{label}</text>" in picture for label in ("friendly (45)", "discount (45)", "holdout (10)"))


# Flows


async def run_flow(env: WorkflowEnvironment, settings: Settings, task_queue: str, customer_id: str) -> tuple[Any, ...]:
    flow = FlowInput(
        definition=WorkflowDefinition.model_validate(SPLIT_DEFINITION),
        campaign_id="split-test",
        customer={"id": customer_id, "name": "Ada", "phone": "+15550001"},
        cart={"id": "cart-7"},
        revision=FLOW_REVISION,
    )
    async with make_worker(env.client, settings, task_queue=task_queue):
        handle = await start_flow_input(env.client, flow, task_queue)
        result = await handle.result()
    description = await handle.describe()
    steps = (await description.memo())["steps"]
    return result, description.typed_search_attributes, steps, Outbox(settings.channels.outbox).read()


async def test_a_holdout_flow_ends_held_out_with_nothing_sent(ts_env, settings: Settings, task_queue: str) -> None:
    assert PINNED[1] == "holdout"
    result, attributes, steps, outbox = await run_flow(ts_env, settings, task_queue, "c1")
    assert isinstance(result, FlowStatus)
    assert (result.outcome, result.path, result.variants) == ("held_out", ["copy_test"], {"copy-2031-01": "holdout"})
    assert outbox == []
    assert attributes.get(VARIANT) == "copy-2031-01:holdout"
    assert attributes.get(OUTCOME) == "held_out"
    assert attributes.get(MESSAGED) is None
    assert [(s["step"], s["node"], s["variant"]) for s in steps] == [("copy_test", "split", "holdout")]


async def test_a_variant_flow_takes_its_go_to(ts_env, settings: Settings, task_queue: str) -> None:
    assert PINNED[2] == "discount"
    result, attributes, steps, outbox = await run_flow(ts_env, settings, task_queue, "c2")
    assert (result.outcome, result.path, result.variants) == (
        "completed",
        ["copy_test", "msg_discount"],
        {"copy-2031-01": "discount"},
    )
    assert [(line["step"], line["text"]) for line in outbox] == [("msg_discount", "10% off your cart today")]
    assert attributes.get(VARIANT) == "copy-2031-01:discount"
    assert attributes.get(MESSAGED) is True
    assert steps[0]["variant"] == "discount"
    assert "variant" not in steps[1]


async def test_simulate_all_paths_runs_every_variant(tmp_path: Path) -> None:
    path = tmp_path / "split-test.toml"
    path.write_text(campaign_toml("split-test", workflow=SPLIT), encoding="utf-8")
    run = await scheduler("simulate", path, "--all-paths", "--json")
    assert run.code == 0, run
    by_path = {tuple(p["path"]): p for p in json.loads(run.stdout)}
    assert set(by_path) == {("copy_test",), ("copy_test", "msg_friendly"), ("copy_test", "msg_discount")}
    assert by_path["copy_test",]["outcome"] == "held_out"
    assert by_path["copy_test",]["messages"] == []
    assert [m["step"] for m in by_path["copy_test", "msg_friendly"]["messages"]] == ["msg_friendly"]
    assert [s["variant"] for s in by_path["copy_test", "msg_discount"]["steps"][:1]] == ["discount"]

    table = await scheduler("simulate", path, "--all-paths")
    assert table.code == 0, table
    assert "3 path(s) from 3 combination(s)" in table.stdout
    for variant in ("friendly", "discount", "holdout"):
        assert f"[copy_test={variant}]" in table.stdout


# Where a split meets other features

ASK_AFTER_SPLIT = {
    "start_step": "split",
    "steps": {
        "split": {
            "node": "split",
            "params": {"experiment": "ask"},
            "variants": {"a": {"weight": 1, "go_to": "ask"}, "b": {"weight": 1, "go_to": "ask"}},
        },
        "ask": {"node": "wait_answer", "params": {"timeout": "1h"}, "condition": {"not_satisfied": "owner"}},
        "owner": {"node": "notify_creator"},
    },
}


async def test_an_opt_out_before_a_split_counts_for_the_wait_its_variant_leads_to(
    ts_env: WorkflowEnvironment, settings: Settings, task_queue: str
) -> None:
    """A STOP delivered with the flow's start (before its split step ran) is kept for the `wait_answer` the
    variant leads to, as before any other step that leads to one: the wait's not_satisfied edge tells the owner."""
    flow = FlowInput(
        definition=WorkflowDefinition.model_validate(ASK_AFTER_SPLIT),
        campaign_id="split-test",
        owner="owner@example.com",
        customer={"id": "c1", "phone": "+15550001"},
        revision=FLOW_REVISION,
    )
    stop = Reply(reply_id="r1", text="STOP", channel="sms", opt_out=True)
    async with make_worker(ts_env.client, settings, task_queue=task_queue):
        handle = await start_flow_input(
            ts_env.client, flow, task_queue, start_signal=CLIENT_ANSWERED_SIGNAL, start_signal_args=[stop]
        )
        result = await handle.result()
    assert (result.path, result.outcome) == (["split", "ask", "owner"], "opted_out")
    assert result.variants == {"ask": assign_variant("split-test", "ask", "customer:c1", {"a": 1, "b": 1})}
    assert [line["step"] for line in Outbox(settings.channels.outbox).read()] == ["owner"]
