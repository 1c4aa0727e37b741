"""The one place a Temporal client is made (with the pydantic data converter) and search attributes are ensured."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeIndexedValueType, SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode

from scheduler.config import Settings
from scheduler.errors import SchedulerError, TemporalUnavailable
from scheduler.flow import attributes

log = logging.getLogger(__name__)

_TYPE_NAMES = {
    SearchAttributeIndexedValueType.BOOL: "Bool",
    SearchAttributeIndexedValueType.DATETIME: "Datetime",
    SearchAttributeIndexedValueType.KEYWORD: "Keyword",
    SearchAttributeIndexedValueType.KEYWORD_LIST: "KeywordList",
    SearchAttributeIndexedValueType.TEXT: "Text",
    SearchAttributeIndexedValueType.INT: "Int",
    SearchAttributeIndexedValueType.DOUBLE: "Double",
}
_DENIED = (RPCStatusCode.PERMISSION_DENIED, RPCStatusCode.UNAUTHENTICATED)
SEARCH_ATTRIBUTES: tuple[SearchAttributeKey[Any], ...] = attributes.ALL


async def connect(settings: Settings) -> Client:
    """Connect to the configured cluster, or to the embedded dev server when `temporal.address` is empty."""
    target = settings.temporal_address
    try:
        return await Client.connect(
            target,
            namespace=settings.temporal.namespace,
            api_key=settings.temporal.api_key or None,
            tls=settings.temporal.tls,
            data_converter=pydantic_data_converter,
        )
    except RuntimeError as exc:
        hint = "start it with `scheduler up`" if settings.embedded else "check temporal.address, tls and api_key"
        reason = m.group(1) if (m := re.search(r'message: "([^"]+)"', str(exc))) else str(exc)
        raise TemporalUnavailable(f"cannot reach Temporal at {target}: {reason} ({hint})") from None


def search_attribute_flags() -> list[str]:
    """`--search-attribute Name=Type` arguments for `temporal server start-dev`."""
    return [
        arg
        for key in SEARCH_ATTRIBUTES
        for arg in ("--search-attribute", f"{key.name}={_TYPE_NAMES[key.indexed_value_type]}")
    ]


def search_attribute_commands(namespace: str, keys: Iterable[SearchAttributeKey[Any]]) -> str:
    """The `temporal` CLI commands that register `keys`, for an operator to run by hand."""
    return "\n".join(
        f"  temporal operator search-attribute create --namespace {namespace} "
        f"--name {k.name} --type {_TYPE_NAMES[k.indexed_value_type]}"
        for k in keys
    )


async def ensure_search_attributes(client: Client, namespace: str) -> None:
    """Register missing custom search attributes; if the server refuses, say how to do it by hand.

    A flow that upserts an unregistered attribute fails its workflow task and hangs, so this runs
    before any worker starts.
    """
    svc = client.operator_service
    try:
        existing = await svc.list_search_attributes(ListSearchAttributesRequest(namespace=namespace))
        known = {*existing.custom_attributes, *existing.system_attributes}
    except RPCError as exc:
        if exc.status in _DENIED:
            # We may not look, so we cannot know: say what flows need and go on.
            log.warning(
                "cannot list search attributes (%s); flows need these, registered:\n%s",
                exc.message,
                search_attribute_commands(namespace, SEARCH_ATTRIBUTES),
            )
            return
        if exc.status != RPCStatusCode.UNIMPLEMENTED:  # the time-skipping test server can add, not list
            raise
        known = set()
    missing = [k for k in SEARCH_ATTRIBUTES if k.name not in known]
    if not missing:
        return
    request = AddSearchAttributesRequest(
        namespace=namespace,
        search_attributes={k.name: IndexedValueType.ValueType(k.indexed_value_type.value) for k in missing},
    )
    try:
        await svc.add_search_attributes(request)
    except RPCError as exc:
        if exc.status not in (*_DENIED, RPCStatusCode.UNIMPLEMENTED):
            raise
        raise SchedulerError(
            f"the server refused to register search attributes ({exc.message}); run:\n"
            + search_attribute_commands(namespace, missing)
        ) from None
    log.info("registered search attributes: %s", ", ".join(k.name for k in missing))
