"""Search attributes are registered on a server that lacks them; the manual commands are exact."""

from __future__ import annotations

from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from scheduler.flow.attributes import CAMPAIGN_ID, CLIENT_ANSWERED
from scheduler.temporal import SEARCH_ATTRIBUTES, ensure_search_attributes, search_attribute_commands
from tests.helpers import BIN


async def test_ensure_search_attributes_registers_missing_ones_on_a_bare_server() -> None:
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter, dev_server_existing_path=str(BIN / "temporal")
    )
    try:
        svc = env.client.operator_service
        request = ListSearchAttributesRequest(namespace=env.client.namespace)
        assert "CampaignId" not in (await svc.list_search_attributes(request)).custom_attributes
        await ensure_search_attributes(env.client, env.client.namespace)
        registered = (await svc.list_search_attributes(request)).custom_attributes
        assert {k.name for k in SEARCH_ATTRIBUTES} <= set(registered)
        await ensure_search_attributes(env.client, env.client.namespace)  # idempotent: nothing left to add
        assert dict((await svc.list_search_attributes(request)).custom_attributes) == dict(registered)
    finally:
        await env.shutdown()


def test_search_attribute_commands_are_the_cli_commands() -> None:
    assert search_attribute_commands("prod", [CLIENT_ANSWERED, CAMPAIGN_ID]).splitlines() == [
        "  temporal operator search-attribute create --namespace prod --name ClientAnswered --type Bool",
        "  temporal operator search-attribute create --namespace prod --name CampaignId --type Keyword",
    ]
