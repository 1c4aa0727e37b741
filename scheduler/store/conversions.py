"""Conversions as the store keeps them: every purchase reported, and the campaign flow each is attributed to.

A conversion is recorded once per id (a redelivery returns the first record). Which flows it is attributed
to is decided by `scheduler.replies.attribution` (it needs Temporal's visibility); this module writes those
rows and sums them: a campaign's results per variant are one GROUP BY over `conversion_attributions`, however
many flows the campaign started.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite

from scheduler.store import Store, conversion_attributions, conversions_table, stored_utc

MICROS = Decimal(1_000_000)
"""Amounts are stored in millionths of the currency's unit, as integers: exact on both backends."""


@dataclass(frozen=True)
class ConversionRecord:
    """A purchase as recorded: `occurred_at` is when the customer bought (attribution counts from it),
    `received_at` when the service heard of it."""

    conversion_id: str
    occurred_at: datetime
    received_at: datetime
    cart_id: str | None = None
    customer_id: str | None = None
    contact: str | None = None
    """Normalized (`scheduler.flow.contacts.normalize_contact`)."""
    amount: Decimal | None = None
    """At most 6 decimal places, with `currency` (both or neither)."""
    currency: str | None = None
    """ISO 4217, three upper-case letters."""


@dataclass(frozen=True)
class AttributedFlow:
    """A campaign flow a conversion is attributed to."""

    campaign_id: str
    workflow_id: str
    variant: str | None
    """The flow's `Variant` search attribute (`experiment:variant`), None if no split assigned one."""
    started_at: datetime


@dataclass
class VariantConversions:
    """A campaign's attributed conversions for one variant (None: flows no split assigned)."""

    variant: str | None
    converted_flows: int = 0
    """Distinct flows with at least one attributed conversion."""
    conversions: int = 0
    revenue: dict[str, Decimal] = field(default_factory=dict)
    """Summed amounts by currency; conversions without an amount add nothing."""


class Conversions:
    """The conversions in the store. Synchronous: async callers use `asyncio.to_thread`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def record(self, conversion: ConversionRecord) -> tuple[ConversionRecord, bool]:
        """Record a conversion: the stored record and whether this call wrote it (False: a redelivery, whose
        first record stands, whatever this one says)."""
        row = {
            "conversion_id": conversion.conversion_id,
            "cart_id": conversion.cart_id,
            "customer_id": conversion.customer_id,
            "contact": conversion.contact,
            "amount_micros": _micros(conversion.amount),
            "currency": conversion.currency,
            "occurred_at": conversion.occurred_at,
            "received_at": conversion.received_at,
        }
        insert = self._dialect().insert(conversions_table).on_conflict_do_nothing(index_elements=["conversion_id"])
        with self.store.engine.begin() as connection:
            created = connection.execute(insert.values(row).returning(conversions_table.c.id)).first() is not None
        stored = self.get(conversion.conversion_id)
        assert stored is not None
        return stored, created

    def get(self, conversion_id: str) -> ConversionRecord | None:
        with self.store.engine.connect() as connection:
            row = connection.execute(
                select(conversions_table).where(conversions_table.c.conversion_id == conversion_id)
            ).first()
        return None if row is None else _record(row._mapping)

    def attribute(self, conversion: ConversionRecord, flows: Iterable[AttributedFlow]) -> int:
        """Attribute a recorded conversion to these flows (one per campaign; a campaign already holding this
        conversion keeps its flow): how many attributions are new."""
        rows = [
            {
                "conversion_id": conversion.conversion_id,
                "campaign_id": flow.campaign_id,
                "workflow_id": flow.workflow_id,
                "variant": flow.variant,
                "flow_started_at": flow.started_at,
                "amount_micros": _micros(conversion.amount),
                "currency": conversion.currency,
            }
            for flow in flows
        ]
        if not rows:
            return 0
        insert = (
            self._dialect()
            .insert(conversion_attributions)
            .on_conflict_do_nothing(index_elements=["conversion_id", "campaign_id"])
        )
        with self.store.engine.begin() as connection:
            return len(connection.execute(insert.returning(conversion_attributions.c.workflow_id), rows).all())

    def by_variant(self, campaign_id: str) -> list[VariantConversions]:
        """A campaign's attributed conversions per variant (flows without one first), in one query."""
        table = conversion_attributions
        mine = table.c.campaign_id == campaign_id
        counts = (
            select(
                table.c.variant,
                func.count(func.distinct(table.c.workflow_id)).label("flows"),
                func.count().label("conversions"),
            )
            .where(mine)
            .group_by(table.c.variant)
            .subquery()
        )
        sums = (
            select(table.c.variant, table.c.currency, func.sum(table.c.amount_micros).label("micros"))
            .where(mine, table.c.amount_micros.is_not(None))
            .group_by(table.c.variant, table.c.currency)
            .subquery()
        )
        query = (
            select(counts.c.variant, counts.c.flows, counts.c.conversions, sums.c.currency, sums.c.micros)
            .select_from(counts.outerjoin(sums, counts.c.variant.is_not_distinct_from(sums.c.variant)))
            .order_by(counts.c.variant.is_not(None), counts.c.variant, sums.c.currency)
        )
        found: dict[str | None, VariantConversions] = {}
        with self.store.engine.connect() as connection:
            for row in connection.execute(query):
                variant = found.setdefault(
                    row.variant, VariantConversions(row.variant, int(row.flows), int(row.conversions))
                )
                if row.currency is not None:
                    variant.revenue[row.currency] = Decimal(int(row.micros)) / MICROS
        return list(found.values())

    def _dialect(self) -> Any:
        return sqlite if self.store.dialect == "sqlite" else postgresql


def _micros(amount: Decimal | None) -> int | None:
    return None if amount is None else int(amount * MICROS)


def _record(row: Any) -> ConversionRecord:
    micros = row["amount_micros"]
    return ConversionRecord(
        conversion_id=row["conversion_id"],
        occurred_at=stored_utc(row["occurred_at"]),
        received_at=stored_utc(row["received_at"]),
        cart_id=row["cart_id"],
        customer_id=row["customer_id"],
        contact=row["contact"],
        amount=None if micros is None else Decimal(micros) / MICROS,
        currency=row["currency"],
    )
