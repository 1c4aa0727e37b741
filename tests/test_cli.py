"""The `scheduler` console script as a user runs it: a subprocess against the dev server, a worker in-process."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_asyncio
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from scheduler.config import Settings, load_settings
from scheduler.delivery.channels import Outbox
from scheduler.flow.models import FlowStatus
from scheduler.store import Store
from scheduler.store.conversions import Conversions, VariantConversions
from scheduler.worker import make_worker
from tests.helpers import ROOT
from tests.helpers.campaigns import SEED
from tests.helpers.cli import assert_one_line_error, scheduler, write_config
from tests.helpers.flows import reaches
from tests.helpers.servers import free_ports
from tests.helpers.waiting import eventually

# Line numbers matter: the tests assert that problems point at them.
BROKEN_CAMPAIGN = """\
schedule = { cron = "0 * * * *" }
[campaign]
id = "broken"

[workflow]
start_step = "a"

[workflow.steps.a]
node = "nope"
go_to = "b"

[workflow.steps.b]
node = "send_message"
go_to = "zzz"
"""
T = TypeVar("T")


@dataclass
class Cli:
    config: Path
    settings: Settings
    env: WorkflowEnvironment


@pytest_asyncio.fixture
async def cli(dev_env: WorkflowEnvironment, tmp_path: Path, task_queue: str) -> AsyncIterator[Cli]:
    """A config file pointing at the dev server on a fresh queue, and a worker polling that queue."""
    address = dev_env.client.service_client.config.target_host
    config = write_config(tmp_path / "scheduler.toml", address=address, task_queue=task_queue)
    settings = load_settings(config)
    async with make_worker(dev_env.client, settings):
        yield Cli(config, settings, dev_env)


async def test_start_then_signal_completes_satisfied_branch(cli: Cli) -> None:
    started = await scheduler("start", "--config", cli.config)
    assert started.code == 0, started
    ids = json.loads(started.stdout)
    assert ids["workflow_id"].startswith("abandoned_cart-")
    assert ids["run_id"]
    assert ids["message"] == "Workflow started successfully"
    workflow_id = ids["workflow_id"]

    # The config given by environment this time.
    signalled = await scheduler("signal", workflow_id, env={"SCHEDULER_CONFIG": str(cli.config)})
    assert signalled.code == 0, signalled
    assert json.loads(signalled.stdout) == {
        "message": f"Successfully sent 'client-answered' signal to workflow: {workflow_id}"
    }

    handle = cli.env.client.get_workflow_handle(workflow_id, result_type=FlowStatus)
    result = await handle.result()
    assert result.path == ["step_1", "step_2", "step_3"]
    assert result.outcome == "completed"


async def test_signal_stop_opts_the_customer_out_everywhere_and_start_back_in(cli: Cli) -> None:
    """A keyword given to `scheduler signal` is handled as on every reply path, not passed on as a reply."""
    customer = json.dumps({"id": "c8", "phone": "(212) 555-0148"})
    started = await scheduler("start", "--customer", customer, "--config", cli.config)
    workflow_id = json.loads(started.stdout)["workflow_id"]
    await reaches(cli.env.client.get_workflow_handle(workflow_id), "step_2")

    stop = await scheduler("signal", workflow_id, "--text", " stop ", "--config", cli.config)
    assert stop.code == 0, stop
    assert json.loads(stop.stdout) == {"message": f"Opted out 1 contact(s) of workflow {workflow_id}; ended flows: 1"}
    result = await cli.env.client.get_workflow_handle(workflow_id, result_type=FlowStatus).result()
    assert result.outcome == "opted_out"
    listed = await scheduler("suppress", "list", "--json", "--config", cli.config)
    assert [(e["contact"], e["reason"]) for e in json.loads(listed.stdout)] == [("+12125550148", "keyword STOP")]

    start = await scheduler("signal", workflow_id, "--text", "START", "--config", cli.config)  # the flow has ended
    assert json.loads(start.stdout) == {"message": f"Opted in 1 contact(s) of workflow {workflow_id}"}
    listed = await scheduler("suppress", "list", "--json", "--config", cli.config)
    assert json.loads(listed.stdout) == []


async def test_convert_records_signals_and_attributes_a_purchase_once(cli: Cli) -> None:
    cart = f"k-{uuid.uuid4().hex[:12]}"
    started = await scheduler("start", "--cart", json.dumps({"id": cart}), "--config", cli.config)
    workflow_id = json.loads(started.stdout)["workflow_id"]
    order = f"order-{uuid.uuid4().hex[:12]}"
    buy = ("convert", "--cart", cart, "--id", order, "--amount", "19.99", "--currency", "EUR", "--config", cli.config)

    bought = await scheduler(*buy)
    again = await scheduler(*buy)

    assert bought.code == again.code == 0, (bought, again)
    assert json.loads(bought.stdout) == json.loads(again.stdout) == {"conversion_id": order, "signaled": [workflow_id]}
    result = await cli.env.client.get_workflow_handle(workflow_id, result_type=FlowStatus).result()
    assert result.outcome == "converted"  # the shipped campaign exits on a purchase
    late = await scheduler("convert", "--cart", cart, "--id", f"{order}-2", "--config", cli.config)
    assert late.code == 0, late
    assert json.loads(late.stdout) == {
        "conversion_id": f"{order}-2",
        "signaled": [],
        "message": f"no running flow for cart {cart!r}; the conversion is recorded",
    }
    store = Store.open(cli.settings.store_url)
    try:
        assert Conversions(store).by_variant("abandoned-cart") == [  # one flow, the redelivery counted once
            VariantConversions(None, 1, 2, {"EUR": Decimal("19.99")})
        ]
    finally:
        store.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--amount", "-1", "--currency", "EUR"), "--amount: Input should be greater than or equal to 0"),
        (("--amount", "5"), "--currency: amount and currency come together"),
        ((), "--cart or --customer: one of cart_id or customer_id is required"),
    ],
    ids=["negative", "no-currency", "no-target"],
)
async def test_convert_names_the_bad_option_in_one_line(cli: Cli, args: tuple[str, ...], message: str) -> None:
    target = ("--cart", "k-1") if args else ()
    run = await scheduler("convert", *target, *args, "--config", cli.config)
    assert_one_line_error(run, message)


async def test_start_customer_and_cart_options_reach_outbox(cli: Cli) -> None:
    customer = json.dumps({"id": "c9", "name": "Bo", "phone": "+15550199"})
    cart = json.dumps({"id": "k9", "url": "https://shop.example/k9"})
    started = await scheduler("start", "--customer", customer, "--cart", cart, "--config", cli.config)
    assert started.code == 0, started
    workflow_id = json.loads(started.stdout)["workflow_id"]
    handle = cli.env.client.get_workflow_handle(workflow_id)
    try:

        async def sent() -> dict[str, Any]:
            lines = [r for r in Outbox(cli.settings.channels.outbox).read() if r["workflow_id"] == workflow_id]
            assert len(lines) == 1
            return lines[0]

        line = await eventually(sent)
        assert line["to"] == "+15550199"
        assert "Bo" in line["text"]
        assert "https://shop.example/k9" in line["text"]
    finally:
        await handle.terminate("test cleanup")


async def test_start_customer_not_a_json_object_fails(cli: Cli) -> None:
    run = await scheduler("start", "--customer", "[1]", "--config", cli.config)
    assert_one_line_error(run, "--customer", "expected a JSON object")
    run = await scheduler("start", "--cart", "{", "--config", cli.config)
    assert_one_line_error(run, "--cart", "invalid JSON")


async def test_signal_unknown_workflow_fails_with_one_line(cli: Cli) -> None:
    run = await scheduler("signal", "nope", "--config", cli.config)
    assert_one_line_error(run, "workflow 'nope'")
    assert run.stdout == ""


async def test_signal_unknown_signal_name_fails(cli: Cli) -> None:
    run = await scheduler("signal", "anything", "--name", "client-shouted", "--config", cli.config)
    assert_one_line_error(run, "unknown signal name 'client-shouted'")


async def test_start_unknown_campaign_fails(cli: Cli) -> None:
    workflow_id = f"abandoned_cart-cli-unknown-{cli.settings.temporal.task_queue}"
    run = await scheduler("start", "--campaign", "nope", "--workflow-id", workflow_id, "--config", cli.config)
    assert_one_line_error(run, "unknown campaign 'nope'")
    assert run.stdout == ""
    # Nothing was started (describe reads the workflow itself, not eventually consistent visibility).
    with pytest.raises(RPCError) as raised:
        await cli.env.client.get_workflow_handle(workflow_id).describe()
    assert raised.value.status == RPCStatusCode.NOT_FOUND


async def test_start_duplicate_workflow_id_fails(cli: Cli) -> None:
    workflow_id = f"abandoned_cart-cli-dup-{cli.settings.temporal.task_queue}"
    first = await scheduler("start", "--workflow-id", workflow_id, "--config", cli.config)
    assert first.code == 0, first
    try:
        second = await scheduler("start", "--workflow-id", workflow_id, "--config", cli.config)
        assert_one_line_error(second, f"workflow {workflow_id!r} is already running")
    finally:
        await cli.env.client.get_workflow_handle(workflow_id).terminate("test cleanup")


@pytest.mark.parametrize("embedded", [True, False], ids=["embedded", "address"])
async def test_start_nothing_listening_fails_naming_address(tmp_path: Path, embedded: bool) -> None:
    port = free_ports(1)[0]
    address = f"127.0.0.1:{port}"
    config = write_config(
        tmp_path / "scheduler.toml", address="" if embedded else address, task_queue="unused", dev_port=port
    )
    run = await scheduler("start", "--config", config)
    assert_one_line_error(run, f"cannot reach Temporal at {address}")
    assert ("scheduler up" in run.stderr) is embedded


async def test_start_missing_config_file_fails(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    run = await scheduler("start", "--config", missing)
    assert_one_line_error(run, f"config file {str(missing)!r} does not exist")


async def test_validate_repo_campaigns_ok(tmp_path: Path) -> None:
    config = write_config(tmp_path / "scheduler.toml", address="", task_queue="unused")
    run = await scheduler("validate", "--config", config)
    assert run.code == 0, run
    count = len(list((ROOT / "campaigns").glob("*.toml")))
    assert count >= 1
    assert run.stdout.startswith(f"ok: {count} file(s) valid")


async def test_validate_broken_campaign_reports_path_line_key(tmp_path: Path) -> None:
    (tmp_path / "broken.toml").write_text(BROKEN_CAMPAIGN, encoding="utf-8")
    run = await scheduler("validate", "broken.toml", cwd=tmp_path)
    assert run.code == 1, run
    assert "Traceback" not in run.stderr
    assert run.stdout.splitlines() == [
        "broken.toml:9: workflow.steps.a.node: unknown node 'nope' "
        "(known: explicit_wait, notify_creator, send_message, split, wait_answer, webhook)",
        "broken.toml:14: workflow.steps.b.go_to: unknown step 'zzz' (steps: a, b)",
    ]
    assert run.stderr.strip() == "2 error(s) in 1 of 1 file(s)"


async def test_validate_duplicate_campaign_id_names_both_files_at_the_id_line(tmp_path: Path) -> None:
    text = (ROOT / "campaigns" / "abandoned_cart.toml").read_text(encoding="utf-8")
    line = next(n for n, row in enumerate(text.splitlines(), 1) if row.startswith("id ="))
    for name in ("a.toml", "b.toml"):
        (tmp_path / name).write_text(text, encoding="utf-8")
    run = await scheduler("validate", "a.toml", "b.toml", cwd=tmp_path)
    assert run.code == 1, run
    assert f"b.toml:{line}: campaign.id: duplicate campaign id 'abandoned-cart': also used by a.toml" in run.stdout
    assert run.stderr.strip() == "1 error(s) in 1 of 2 file(s)"


async def test_validate_invalid_toml_reports_line(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text('[campaign]\nid = "x"\nname = \n', encoding="utf-8")
    run = await scheduler("validate", "bad.toml", cwd=tmp_path)
    assert run.code == 1, run
    assert run.stdout.startswith("bad.toml:3: invalid TOML")


async def test_graph_campaign_prints_mermaid() -> None:
    run = await scheduler("graph", "campaigns/abandoned_cart.toml", cwd=ROOT)
    assert run.code == 0, run
    assert run.stdout.startswith("flowchart TD\n")
    lines = run.stdout.splitlines()
    assert "    step_2 -->|condition_satisfied| step_3" in lines
    assert "    step_2 -->|condition_timeout| step_4" in lines
    assert "    step_1 --> step_2" in lines


async def test_graph_broken_campaign_fails_with_problems(tmp_path: Path) -> None:
    (tmp_path / "broken.toml").write_text(BROKEN_CAMPAIGN, encoding="utf-8")
    run = await scheduler("graph", "broken.toml", cwd=tmp_path)
    assert run.code == 1, run
    assert run.stdout == ""
    assert run.stderr.splitlines()[0].startswith("broken.toml:9: workflow.steps.a.node: unknown node 'nope'")


async def test_validate_and_graph_seed_json_definition(tmp_path: Path) -> None:
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps(SEED, indent=2), encoding="utf-8")

    validated = await scheduler("validate", seed)
    assert validated.code == 0, validated
    assert validated.stdout.strip() == "ok: 1 file(s) valid"

    graphed = await scheduler("graph", seed)
    assert graphed.code == 0, graphed
    lines = graphed.stdout.splitlines()
    assert lines[0] == "flowchart TD"
    assert "    step_2 -->|condition_satisfied| step_3" in lines
    assert "    step_5 --> step_6" in lines


async def test_validate_seed_json_with_unknown_target_reports_its_line(tmp_path: Path) -> None:
    broken = {**SEED, "steps": {**SEED["steps"], "step_4": {"node": "webhook", "go_to": "step_9"}}}
    seed = tmp_path / "seed.json"
    text = json.dumps(broken, indent=2)
    seed.write_text(text, encoding="utf-8")
    line = next(i for i, s in enumerate(text.splitlines(), start=1) if '"step_9"' in s)

    run = await scheduler("validate", "seed.json", cwd=tmp_path)
    assert run.code == 1, run
    assert run.stdout.splitlines()[0].startswith(
        f"seed.json:{line}: workflow.steps.step_4.go_to: unknown step 'step_9'"
    )


async def test_suppress_verbs_import_list_remove_and_export(tmp_path: Path) -> None:
    config = str(write_config(tmp_path / "scheduler.toml", address="", task_queue="unused"))
    source = tmp_path / "optouts.csv"
    source.write_text("contact,reason\n(212) 555-0142,old list\nann@Example.com,\nnot a contact,\n", encoding="utf-8")

    imported = await scheduler("suppress", "import", str(source), "--config", config)
    assert imported.code == 1, imported  # one bad row: reported, the others imported
    assert imported.stdout.strip() == "imported: 2 added, 0 already suppressed, 1 bad"
    assert imported.stderr.startswith(f"{source}:line 4: 'not a contact'")
    again = await scheduler("suppress", "import", str(source), "--config", config)
    assert again.stdout.strip() == "imported: 0 added, 2 already suppressed, 1 bad"

    listed = await scheduler("suppress", "list", "--json", "--config", config)
    assert listed.code == 0, listed
    assert [(e["contact"], e["reason"]) for e in json.loads(listed.stdout)] == [
        ("+12125550142", "old list"),
        ("ann@example.com", "import"),
    ]
    assert (await scheduler("suppress", "remove", "2125550142", "--config", config)).code == 0
    assert_one_line_error(
        await scheduler("suppress", "remove", "2125550142", "--config", config), "+12125550142 is not suppressed"
    )
    assert_one_line_error(await scheduler("suppress", "add", "x y", "--config", config), "'x y' is neither")
    added = await scheduler("suppress", "add", "+44 20 7946 0958", "--config", config)
    assert added.stdout.strip() == "suppressed: +442079460958"

    exported = tmp_path / "export.csv"
    assert (await scheduler("suppress", "export", str(exported), "--config", config)).code == 0
    assert [line.split(",")[0] for line in exported.read_text(encoding="utf-8").splitlines()] == [
        "contact",
        "ann@example.com",
        "'+442079460958",  # no cell starts like a formula: `suppress import` takes the `'` off
    ]
    assert (tmp_path / "scheduler.db").is_file()  # the default store: beside the dev server's database


async def test_db_upgrade_reports_an_unreachable_store_in_one_line(tmp_path: Path) -> None:
    config = write_config(tmp_path / "scheduler.toml", address="", task_queue="unused")
    env = {"SCHEDULER_STORE__URL": "postgresql+psycopg://u:secret@127.0.0.1:1/x?connect_timeout=2"}
    run = await scheduler("db", "upgrade", "--config", str(config), env=env)
    assert_one_line_error(run, "store postgresql+psycopg://u:***@127.0.0.1:1/x")
    assert "secret" not in run.stderr
    ok = await scheduler("db", "upgrade", "--config", str(config))
    assert ok.code == 0 and ok.stdout.startswith("store up to date: sqlite:///")
