"""The id and record rules (`scheduler.flow.limits`), and the CLI refusing what they refuse before Temporal sees it."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from scheduler.errors import InvalidValue, SchedulerError
from scheduler.flow.limits import MAX_ID_BYTES, check_customer, check_id, check_record
from tests.helpers.cli import assert_one_line_error, scheduler, write_config
from tests.helpers.flows import nested_record


@pytest.mark.parametrize(
    "value",
    ["k1", "abandoned_cart-3f2a", "o'brien", "a b", "Ünïcødé", "k" * 255, "€" * 85, "+12125550123", "ann@example.com"],
    ids=["plain", "flow-id", "quote", "space", "unicode", "255-ascii", "255-bytes", "phone", "email"],
)
def test_check_id_keeps_a_valid_id(value: str) -> None:
    assert check_id(value, what="cart.id") == value


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "is empty"),
        ("k" * 256, f"is longer than {MAX_ID_BYTES} bytes (UTF-8)"),
        ("€" * 86, f"is longer than {MAX_ID_BYTES} bytes (UTF-8)"),
        ("a\x00b", "contains a control character (U+0000)"),
        ("tab\there", "contains a control character (U+0009)"),
        ("line\n", "contains a control character (U+000A)"),
        ("del\x7f", "contains a control character (U+007F)"),
        ("c1\x85", "contains a control character (U+0085)"),
        ("half\ud800", "contains a lone surrogate (U+D800)"),
    ],
    ids=["empty", "256-ascii", "258-bytes", "nul", "tab", "newline", "del", "c1-control", "surrogate"],
)
def test_check_id_refuses_what_temporal_cannot_take_naming_field_not_value(value: str, problem: str) -> None:
    with pytest.raises(InvalidValue) as raised:
        check_id(value, what="cart.id")
    assert str(raised.value) == f"cart.id {problem}"
    assert isinstance(raised.value, SchedulerError) and isinstance(raised.value, ValueError)


def test_check_record_keeps_what_a_flow_can_take() -> None:
    cart = {"id": 42, "url": "https://shop.example/k", "items": [{"sku": "a", "qty": 1.5}], "deep": nested_record(31)}
    assert check_record(cart, what="cart") == cart
    assert check_record({"notes": "n" * (64 * 1024 - 20)}, what="cart")


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (nested_record(33), "cart is nested deeper than 32 levels"),
        ({"items": [nested_record(32)]}, "cart is nested deeper than 32 levels"),
        ({"notes": "n" * (64 * 1024)}, "cart is larger than 65536 bytes as JSON"),
        ({"total": float("nan")}, "cart is not a JSON object of text, numbers, lists and objects"),
        ({"note": "half\ud800"}, "cart is not a JSON object of text, numbers, lists and objects"),
        ({"id": True}, "cart.id must be text or a whole number, not bool"),
        ({"id": 1.5}, "cart.id must be text or a whole number, not float"),
        ({"id": "k\x00"}, "cart.id contains a control character (U+0000)"),
    ],
    ids=["33-deep", "deep-in-a-list", "over-64-kib", "nan", "surrogate", "bool-id", "float-id", "nul-id"],
)
def test_check_record_refuses_what_a_flow_cannot_take(record: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidValue) as raised:
        check_record(record, what="cart")
    assert str(raised.value) == message


def test_check_customer_holds_contacts_to_the_id_rule_but_lets_a_non_contact_through() -> None:
    assert check_customer({"phone": "call me maybe", "email": "none"}) == {"phone": "call me maybe", "email": "none"}
    with pytest.raises(InvalidValue, match=r"^customer\.email contains a control character \(U\+0000\)$"):
        check_customer({"email": "ann\x00@example.com"})
    with pytest.raises(InvalidValue, match=r"^customer\.phone is longer than 255 bytes"):
        check_customer({"phone": "1" * 256})


# The CLI: `scheduler start` and `scheduler signal` share `scheduler.campaigns.start` with the API.


@pytest.fixture
def config(dev_env: WorkflowEnvironment, tmp_path: Path) -> Path:
    """A config file pointing at the dev server (no worker needed: nothing may start)."""
    address = dev_env.client.service_client.config.target_host
    return write_config(tmp_path / "scheduler.toml", address=address, task_queue=f"tq-{uuid.uuid4()}")


async def assert_not_started(env: WorkflowEnvironment, workflow_id: str) -> None:
    with pytest.raises(RPCError) as raised:
        await env.client.get_workflow_handle(workflow_id).describe()
    assert raised.value.status == RPCStatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workflow-id", "abandoned_cart-\x01"], "workflow_id contains a control character (U+0001)"),
        (["--workflow-id", "w" * 256], "workflow_id is longer than 255 bytes (UTF-8)"),
        (["--customer", json.dumps({"id": "c\x00"})], "customer.id contains a control character (U+0000)"),
        (["--cart", json.dumps({"id": "k" * 3000})], "cart.id is longer than 255 bytes (UTF-8)"),
    ],
    ids=["control-workflow-id", "long-workflow-id", "nul-customer-id", "cart-id-over-2kib"],
)
async def test_cli_start_bad_id_fails_with_one_line_and_starts_nothing(
    dev_env: WorkflowEnvironment, config: Path, args: list[str], message: str
) -> None:
    workflow_id = args[1] if args[0] == "--workflow-id" else f"abandoned_cart-cli-{uuid.uuid4()}"
    extra = [] if args[0] == "--workflow-id" else ["--workflow-id", workflow_id]

    run = await scheduler("start", *args, *extra, "--config", config)

    assert_one_line_error(run, message)
    assert run.stdout == ""
    await assert_not_started(dev_env, workflow_id)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["wf\x01"], "workflow_id contains a control character (U+0001)"),
        (["w" * 256], "workflow_id is longer than 255 bytes (UTF-8)"),
        (["wf", "--run-id", "r\x02"], "run_id contains a control character (U+0002)"),
        (["wf", "--reply-id", "r" * 300], "reply_id is longer than 255 bytes (UTF-8)"),
    ],
    ids=["control-workflow-id", "long-workflow-id", "control-run-id", "long-reply-id"],
)
async def test_cli_signal_bad_id_fails_with_one_line(config: Path, args: list[str], message: str) -> None:
    run = await scheduler("signal", *args, "--config", config)
    assert_one_line_error(run, message)
    assert run.stdout == ""
