"""Conversions kept and attributed: the store's tables on SQLite and PostgreSQL, the attribution rule, the
campaign's `attribution_window`. The same end to end on the dev server is in tests/test_conversions.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import inspect

from scheduler.campaigns.campaign import load_campaign
from scheduler.replies.attribution import attributable
from scheduler.store import Store
from scheduler.store.conversions import AttributedFlow, ConversionRecord, Conversions, VariantConversions
from tests.helpers.campaigns import BASE, NAME_LINE
from tests.helpers.store import migrations as store_migrations

AT = datetime(2031, 1, 10, 12, 0, tzinfo=UTC)


def conversion(conversion_id: str, *, amount: str | None = None, currency: str | None = None) -> ConversionRecord:
    return ConversionRecord(
        conversion_id=conversion_id,
        occurred_at=AT,
        received_at=AT + timedelta(seconds=1),
        cart_id=f"cart-{conversion_id}",
        customer_id="c1",
        contact="+12125550142",
        amount=None if amount is None else Decimal(amount),
        currency=currency,
    )


def flow(workflow_id: str, started_before: timedelta, *, campaign: str = "spring", variant: str | None = None):
    return AttributedFlow(campaign, workflow_id, variant, AT - started_before)


@pytest.fixture
def conversions(store_url: str):
    store = Store.open(store_url)
    try:
        yield Conversions(store)
    finally:
        store.close()


# The store


def test_migration_0007_downgrades_and_upgrades_again(store_url: str) -> None:
    with store_migrations(store_url) as migrations:
        connection = migrations.connection
        migrations.downgrade("0006")
        assert not inspect(connection).has_table("conversions")
        assert not inspect(connection).has_table("conversion_attributions")
        migrations.upgrade()
        schema = inspect(connection)
        assert [c["column_names"] for c in schema.get_unique_constraints("conversions")] == [["conversion_id"]]
        assert schema.get_pk_constraint("conversion_attributions")["constrained_columns"] == [
            "conversion_id",
            "campaign_id",
        ]
        indexes = {i["name"]: i["column_names"] for i in schema.get_indexes("conversion_attributions")}
        assert indexes == {"conversion_attributions_campaign_variant": ["campaign_id", "variant"]}


def test_a_conversion_is_kept_whole_and_a_redelivery_counts_once(conversions: Conversions) -> None:
    first = conversion("order-1", amount="19.990001", currency="EUR")

    stored, created = conversions.record(first)
    again, created_again = conversions.record(conversion("order-1", amount="5", currency="USD"))

    assert (stored, created) == (first, True)
    assert (again, created_again) == (first, False)  # the first record stands
    assert conversions.attribute(stored, [flow("w1", timedelta(hours=1), variant="x:a")]) == 1
    assert conversions.attribute(again, [flow("w1", timedelta(hours=1), variant="x:a")]) == 0
    assert conversions.by_variant("spring") == [VariantConversions("x:a", 1, 1, {"EUR": Decimal("19.990001")})]


def test_a_campaign_keeps_the_first_flow_a_conversion_was_attributed_to(conversions: Conversions) -> None:
    stored, _ = conversions.record(conversion("order-1"))

    assert conversions.attribute(stored, [flow("w1", timedelta(hours=2), variant="x:a")]) == 1
    assert conversions.attribute(stored, [flow("w2", timedelta(hours=1), variant="x:b")]) == 0

    assert conversions.by_variant("spring") == [VariantConversions("x:a", 1, 1)]


def test_by_variant_counts_flows_conversions_and_revenue_per_currency(conversions: Conversions) -> None:
    bought = {
        # conversion id: (amount, currency, flows it is attributed to)
        "o1": ("10.50", "EUR", [flow("w1", timedelta(hours=1), variant="x:a")]),
        "o2": ("4.50", "EUR", [flow("w1", timedelta(hours=2), variant="x:a")]),  # the same flow again
        "o3": ("7", "USD", [flow("w2", timedelta(hours=1), variant="x:a")]),
        "o4": (None, None, [flow("w3", timedelta(hours=1), variant="x:b")]),
        "o5": ("1", "EUR", [flow("w4", timedelta(hours=1), variant="x:holdout")]),
        "o6": ("2", "EUR", [flow("w5", timedelta(hours=1))]),  # a flow no split assigned
        "o7": (
            "100",
            "EUR",
            [flow("w6", timedelta(hours=1), variant="x:a"), flow("o-w", timedelta(1), campaign="other", variant="y:a")],
        ),
    }
    for conversion_id, (amount, currency, flows) in bought.items():
        stored, _ = conversions.record(conversion(conversion_id, amount=amount, currency=currency))
        conversions.attribute(stored, flows)

    assert conversions.by_variant("spring") == [
        VariantConversions(None, 1, 1, {"EUR": Decimal(2)}),
        VariantConversions("x:a", 3, 4, {"EUR": Decimal("115"), "USD": Decimal(7)}),
        VariantConversions("x:b", 1, 1, {}),
        VariantConversions("x:holdout", 1, 1, {"EUR": Decimal(1)}),
    ]
    assert conversions.by_variant("other") == [VariantConversions("y:a", 1, 1, {"EUR": Decimal(100)})]
    assert conversions.by_variant("nobody") == []


# The attribution rule


@pytest.mark.parametrize(
    ("started_before", "attributed"),
    [
        (timedelta(0), True),  # started the instant of the purchase
        (timedelta(days=5), True),  # the window's far end is inside
        (timedelta(days=5, microseconds=1), False),
        (timedelta(days=30), False),
        (-timedelta(seconds=1), False),  # started after the purchase
    ],
    ids=["at-purchase", "window-end", "just-outside", "long-before", "after-purchase"],
)
def test_a_flow_gets_a_conversion_within_the_default_window_before_it(
    started_before: timedelta, attributed: bool
) -> None:
    one = flow("w1", started_before, variant="x:holdout")
    assert attributable([one], conversion("o1"), {}) == ([one] if attributed else [])


def test_each_campaign_attributes_to_its_latest_flow_in_its_own_window() -> None:
    older = flow("w-old", timedelta(hours=3))
    latest = flow("w-new", timedelta(hours=1))
    short_window = flow("w-short", timedelta(hours=2), campaign="flash")
    long_window = flow("w-long", timedelta(days=20), campaign="slow")

    found = attributable(
        [older, latest, short_window, long_window],
        conversion("o1"),
        {"flash": timedelta(hours=1), "slow": timedelta(days=30)},
    )

    assert found == [long_window, latest]  # by campaign id


# The campaign file


def test_attribution_window_is_read_and_defaults_to_5_days(tmp_path: Path) -> None:
    plain, week = tmp_path / "plain.toml", tmp_path / "week.toml"
    plain.write_text(BASE)
    week.write_text(BASE.replace('name = "Spring sale"\n', 'name = "Spring sale"\nattribution_window = "7d"\n'))

    (default, _), (seven, _) = load_campaign(plain), load_campaign(week)

    assert default is not None and seven is not None
    assert (default.campaign.attribution_window, seven.campaign.attribution_window) == (timedelta(5), timedelta(7))


def test_a_default_attribution_window_leaves_the_campaign_s_hash_unchanged(tmp_path: Path) -> None:
    files = {"plain": "", "five": 'attribution_window = "5d"\n', "week": 'attribution_window = "7d"\n'}
    hashes = {}
    for name, line in files.items():
        path = tmp_path / f"{name}.toml"
        path.write_text(BASE.replace('name = "Spring sale"\n', f'name = "Spring sale"\n{line}'))
        campaign, problems = load_campaign(path)
        assert campaign is not None, problems
        hashes[name] = campaign.sha256
    assert hashes["plain"] == hashes["five"] != hashes["week"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('"0s"', "attribution_window must be longer than 0s and at most 90d"),
        ('"91d"', "attribution_window must be longer than 0s and at most 90d"),
        ('"soon"', "invalid duration 'soon'"),
        ("5", "expected a duration such as '90s'"),
    ],
    ids=["zero", "too-long", "unreadable", "a-number"],
)
def test_a_bad_attribution_window_is_named_with_its_file_and_line(tmp_path: Path, value: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(BASE.replace('name = "Spring sale"\n', f'name = "Spring sale"\nattribution_window = {value}\n'))

    campaign, problems = load_campaign(path)

    assert campaign is None
    assert [(p.line, p.key) for p in problems] == [(NAME_LINE + 1, "campaign.attribution_window")]
    assert message in problems[0].message
