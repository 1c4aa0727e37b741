"""Field mapping: a row of any source → a `Target` (cart, customer, contacts) through `[audience.fields]`, or a
`Skip` naming why it cannot become a flow."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from pydantic import BaseModel, Field

from scheduler.audience.model import AUDIENCE_FIELDS, Audience
from scheduler.errors import InvalidContact, InvalidValue
from scheduler.flow.contacts import normalize_contact
from scheduler.flow.limits import check_id, check_record

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


class Target(BaseModel):
    """One row that can become a flow: what `FlowInput` gets as `cart` and `customer`, plus its contacts."""

    cart: dict[str, Any]
    """Always has `id` (text); maybe `url`, `total`, `items`."""
    customer: dict[str, Any] = Field(default_factory=dict)
    """Maybe `id` (text), `name`, `phone` (E.164), `email` (lower case), `timezone`."""
    contacts: list[str] = Field(default_factory=list)
    """The customer's normalized phone and e-mail (the `CustomerContact` search attribute)."""
    row_number: int = 0
    """Where the row was: see `Skip.row_number`."""


class Skip(BaseModel):
    """A row that cannot become a flow, and why.

    The reason never repeats a contact's value (it would end up in Temporal's history and logs):
    `row_number` finds the row instead. It is the line in a jsonl file, the line where the record
    starts in a csv file, and the 1-based position in the results for http (across pages) and sql.
    """

    reason: str
    row_number: int


Rows = list[tuple[int, "Mapping[str, Any] | Skip"]]
"""(row number, the row as read or why it could not be read)."""


class _Invalid(Exception):
    """Why a row cannot become a flow (becomes a Skip)."""


def map_row(audience: Audience, row: Mapping[str, Any], row_number: int) -> Target | Skip:
    """A source row → a Target, or a Skip naming the reason.

    Each of our fields is read from the column `[audience.fields]` maps it to, else from the column of
    its own dotted name. A column name is looked up as a key first, then as a path into nested objects,
    so `cart.id` finds both a column "cart.id" and JSON `{"cart": {"id": …}}`. Columns that are not
    mapped to our fields are left out: they would otherwise all land in Temporal's history.
    Empty values (null, "", blanks) count as absent.
    """
    values: dict[str, Any] = {}
    for field in AUDIENCE_FIELDS:
        value = _pick(row, audience.fields.get(field, field))
        if isinstance(value, str):
            value = value.strip()
        if value is not None and value != "":
            values[field] = value
    try:
        if "cart.id" not in values:
            column = audience.fields.get("cart.id", "cart.id")
            raise _Invalid(f"no cart.id (column {column!r} is missing or empty)")
        values["cart.id"] = _identifier("cart.id", values["cart.id"])
        if "customer.id" in values:
            values["customer.id"] = _identifier("customer.id", values["customer.id"])
        contacts = []
        for field in ("customer.phone", "customer.email"):
            if field in values:
                values[field] = _contact(field, values[field])
                if values[field] not in contacts:
                    contacts.append(values[field])
    except _Invalid as exc:
        return Skip(reason=str(exc), row_number=row_number)
    if "cart.total" in values:
        values["cart.total"] = _total(values["cart.total"])
    if isinstance(items := values.get("cart.items"), str) and items.startswith("["):
        try:
            values["cart.items"] = json.loads(items)  # a csv cell holding a JSON array
        except ValueError:
            pass
    cart: dict[str, Any] = {}
    customer: dict[str, Any] = {}
    for field, value in values.items():
        table, _, name = field.partition(".")
        (cart if table == "cart" else customer)[name] = _plain(value)
    try:  # e.g. a cart's items too many or too deep for a flow's input
        check_record(cart, what="cart")
        check_record(customer, what="customer")
    except InvalidValue as exc:
        return Skip(reason=str(exc), row_number=row_number)
    return Target(cart=cart, customer=customer, contacts=contacts, row_number=row_number)


def _pick(row: Mapping[str, Any], column: str) -> Any:
    if column in row:
        return row[column]
    value: Any = row
    for part in column.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _identifier(field: str, value: Any) -> str:
    """Ids become text that follows the id rule (`scheduler.flow.limits`): they end up in a workflow id and in
    Keyword search attributes, where a NUL or an oversize id would fail the start (and the page) or stall the flow."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
    elif isinstance(value, float | Decimal) and math.isfinite(value) and value == int(value):
        text = str(int(value))
    elif isinstance(value, UUID):
        text = str(value)
    else:
        raise _Invalid(f"{field} must be text or a whole number, not {type(value).__name__}")
    try:
        return check_id(text, what=field)
    except InvalidValue as exc:
        raise _Invalid(str(exc)) from None


def _contact(field: str, value: Any) -> str:
    phone = field == "customer.phone"
    what = "a valid phone number" if phone else "a valid e-mail address"
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise _Invalid(f"{field} is not {what}")
    try:
        normal = normalize_contact(value)
    except InvalidContact:
        raise _Invalid(f"{field} is not {what}") from None
    if ("@" in normal) == phone:  # an e-mail in the phone column or the other way round
        raise _Invalid(f"{field} is not {what}")
    return normal


def _total(value: Any) -> Any:
    """A csv cell "42.50" becomes 42.5, so templates can compute with it; anything else stays as given."""
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        return float(value) if "." in value else int(value)
    return value


def _plain(value: Any) -> Any:
    """JSON-safe values (a Temporal payload): database rows bring Decimals, datetimes, UUIDs and bytes."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value)
