"""What may be handed to Temporal from outside: ids, and the customer and cart records a flow starts with.

One rule for every id the API, the CLI and audiences pass on (workflow and run ids, customer and cart
ids, reply and conversion ids, contacts): Temporal keeps them as workflow ids (at most 1,000 bytes),
as search attribute values (2 KiB each by default: a start over it fails, an upsert over it stalls
the flow) and puts them in visibility queries (which a NUL breaks: the server answers "unavailable"
until the client gives up). Checked here, before any call, such a value is a clear 422 (or a skipped
audience row) instead of a 502, or a 503 after seconds.

Error messages name the field and the problem, never the value: an audience's skip reasons are
counted by text, and an id 3,000 bytes long is no help in a one-line error either.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import AfterValidator, Field, ValidationInfo

from scheduler.errors import InvalidValue

MAX_ID_BYTES = 255
"""An id's limit, in bytes of UTF-8: a search attribute value stays far below 2 KiB, and a campaign run's flow
id `<campaign id>-<cart id>` (at most 63 + 1 + 255 bytes) below Temporal's 1,000."""
MAX_RECORD_BYTES = 64 * 1024
"""A customer's or cart's limit, as compact JSON: each is copied into the flow's input and every activity's."""
MAX_RECORD_DEPTH = 32
"""Nesting levels of a customer or cart (the record itself is one): the workers' JSON parser refuses
200, which would fail every workflow task of the flow."""
CONTACT_FIELDS = ("phone", "email")
"""A customer's fields that become the `CustomerContact` search attribute."""

# Control characters (Unicode category Cc) and lone surrogates, which UTF-8 cannot encode.
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def check_id(value: str, *, what: str) -> str:
    """`value`, if it may be used as an id; `what` names it in the error.

    Raises:
        InvalidValue: empty, over `MAX_ID_BYTES` bytes of UTF-8, or with a control character or a lone surrogate.
    """
    if problem := id_problem(value):
        raise InvalidValue(f"{what} {problem}")
    return value


def id_problem(value: str) -> str | None:
    """What keeps `value` from being an id (`"is empty"`, …), or None: `check_id` for callers with their own error."""
    if not value:
        return "is empty"
    if len(value.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
        return f"is longer than {MAX_ID_BYTES} bytes (UTF-8)"
    if found := _FORBIDDEN.search(value):
        kind = "a lone surrogate" if "\ud800" <= found.group() <= "\udfff" else "a control character"
        return f"contains {kind} (U+{ord(found.group()):04X})"
    return None


def check_customer(record: Mapping[str, Any], *, what: str = "customer") -> dict[str, Any]:
    """A customer record a flow may start with: a bounded record whose `id`, `phone` and `email` follow the id rule.

    A phone or e-mail that is no contact is let through (the flow starts, it cannot be found by it):
    only what would reach the `CustomerContact` search attribute broken is refused.

    Raises:
        InvalidValue: see `check_record`; or a contact field that breaks `check_id`.
    """
    checked = check_record(record, what=what)
    for field in CONTACT_FIELDS:
        if isinstance(value := checked.get(field), str):
            check_id(value, what=f"{what}.{field}")
    return checked


def check_record(record: Mapping[str, Any], *, what: str) -> dict[str, Any]:
    """A customer or cart record (`what`) a flow may start with, as a plain dict.

    Raises:
        InvalidValue: not JSON (e.g. NaN, a lone surrogate), nested deeper than `MAX_RECORD_DEPTH`,
            over `MAX_RECORD_BYTES`, or an `id` that is neither text nor a whole number or breaks `check_id`.
    """
    _check_depth(record, what)
    try:
        size = len(json.dumps(record, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode())
    except (TypeError, ValueError):  # UnicodeEncodeError is a ValueError
        raise InvalidValue(f"{what} is not a JSON object of text, numbers, lists and objects") from None
    if size > MAX_RECORD_BYTES:
        raise InvalidValue(f"{what} is larger than {MAX_RECORD_BYTES} bytes as JSON")
    record_id = record.get("id")
    if record_id is not None:
        if isinstance(record_id, bool) or not isinstance(record_id, str | int):
            raise InvalidValue(f"{what}.id must be text or a whole number, not {type(record_id).__name__}")
        check_id(str(record_id), what=f"{what}.id")
    return dict(record)


def _check_depth(record: Mapping[str, Any], what: str) -> None:
    """Iteratively, so a record nested too deeply for recursion is refused like any other."""
    level: list[Any] = [record]
    depth = 0
    while level:
        depth += 1
        if depth > MAX_RECORD_DEPTH:
            raise InvalidValue(f"{what} is nested deeper than {MAX_RECORD_DEPTH} levels")
        nested: list[Any] = []
        for value in level:
            children = value.values() if isinstance(value, Mapping) else value
            nested.extend(c for c in children if isinstance(c, Mapping | list | tuple))
        level = nested


def _id(value: str, info: ValidationInfo) -> str:
    return check_id(value, what=info.field_name or "id")


Id = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_ID_BYTES,
        description=f"At most {MAX_ID_BYTES} bytes of UTF-8, without control characters.",
    ),
    AfterValidator(_id),
]
"""A request field that is an id (`check_id`), for pydantic models."""
Customer = Annotated[dict[str, Any], AfterValidator(lambda v: check_customer(v))]
"""A request's customer record (`check_customer`), for pydantic models."""
Cart = Annotated[dict[str, Any], AfterValidator(lambda v: check_record(v, what="cart"))]
"""A request's cart record (`check_record`), for pydantic models."""
