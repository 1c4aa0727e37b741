"""Audiences: jsonl/csv files, an HTTP API and a SQLite database, read page by page into targets and skips;
`[audience]` validation with file:line errors."""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from scheduler.audience import AUDIENCE_FIELDS, Audience, Page, Skip, Target, map_row, read_page
from scheduler.campaigns.campaign import Campaign, deep_checks, load_campaign
from scheduler.config import ChannelsSettings
from scheduler.errors import AudienceError
from scheduler.flow.models import Window, next_window
from tests.helpers.servers import QuietHandler, http_server

WINDOW = Window(since=datetime(2030, 1, 2, 3, 0, tzinfo=UTC), until=datetime(2030, 1, 2, 4, 0, tzinfo=UTC))
UNIQUE = 292
DUPLICATES = 5
INVALID = {50: "no cart.id", 150: "bad phone", 250: "bad email"}
"""Positions (1-based, among the 300 rows) of the invalid rows."""
REPEATS = (10, 20, 30, 40, 60)
"""Positions of the rows that repeat carts 1..5."""
REASONS = {
    "bad phone": "customer.phone is not a valid phone number",
    "bad email": "customer.email is not a valid e-mail address",
}
PHONE_FORMATS = ("+1 212 555 {n}", "(212) 555-{n}", "212.555.{n}", "tel:+1-212-555-{n}", "1 212 555 {n}")


@pytest.fixture
def campaigns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A campaigns directory under a working directory (so shown paths are `campaigns/…`)."""
    monkeypatch.chdir(tmp_path)
    directory = tmp_path / "campaigns"
    directory.mkdir()
    return directory


def carts(total: int = 300) -> list[dict[str, Any]]:
    """300 rows: 292 distinct carts, 5 repeats of earlier carts, 3 invalid rows (no cart id, bad phone, bad e-mail).

    Phones come in five formats; e-mails in mixed case.
    """
    rows: list[dict[str, Any]] = []
    unique = 0
    for position in range(1, total + 1):
        problem = INVALID.get(position)
        if position in REPEATS:
            n = REPEATS.index(position) + 1
        elif problem:
            n = 9000 + position
        else:
            unique += 1
            n = unique
        row = {
            "cart_ref": f"cart-{n:03d}",
            "mobile": PHONE_FORMATS[n % len(PHONE_FORMATS)].format(n=f"{n:04d}"),
            "mail": f"Customer{n}@Example.COM",
            "name": f"Customer {n}",
            "total": f"{n}.50",
        }
        if problem == "no cart.id":
            row["cart_ref"] = ""
        elif problem == "bad phone":
            row["mobile"] = "12"
        elif problem == "bad email":
            row["mail"] = "customer-at-example.com"
        rows.append(row)
    assert total != 300 or unique == UNIQUE
    return rows


FLAT = Audience(
    source="csv",
    path="carts.csv",
    fields={
        "cart.id": "cart_ref",
        "customer.phone": "mobile",
        "customer.email": "mail",
        "customer.name": "name",
        "cart.total": "total",
    },
)


def nested(row: dict[str, Any]) -> dict[str, Any]:
    """The same row as nested JSON under our own field names (read without any [audience.fields])."""
    out: dict[str, Any] = {
        "cart": {"id": row["cart_ref"], "total": float(row["total"]), "coupon": "SPRING"},
        "customer": {"phone": row["mobile"], "email": row["mail"], "name": row["name"]},
        "internal_score": 0.7,
    }
    if not row["cart_ref"]:
        del out["cart"]["id"]
    return out


def write_jsonl(directory: Path, rows: list[Any], name: str = "carts.jsonl") -> Path:
    path = directory / name
    path.write_text("".join(json.dumps(nested(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def write_source(directory: Path, source: str, rows: list[Any]) -> tuple[Audience, list[int]]:
    """The rows as a `jsonl` or `csv` audience file: its `Audience`, and the line each record starts on."""
    if source == "jsonl":
        write_jsonl(directory, rows)
        return Audience(source="jsonl", path="carts.jsonl"), list(range(1, len(rows) + 1))
    _, lines = write_csv(directory, rows)
    return FLAT, lines


def write_csv(directory: Path, rows: list[Any], name: str = "carts.csv") -> tuple[Path, list[int]]:
    """The rows as CSV; row 7's name holds a comma and a newline (a quoted record over two lines).

    Returns the path and the line each record starts on.
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["cart_ref", "mobile", "mail", "name", "total", "unused"])
    starts, line = [], 2
    for i, row in enumerate(rows, start=1):
        who = "Lovelace, Ada\nCountess" if i == 7 else row["name"]
        writer.writerow([row["cart_ref"], row["mobile"], row["mail"], who, row["total"], "x"])
        starts.append(line)
        line += 2 if i == 7 else 1
    path = directory / name
    path.write_bytes(b"\xef\xbb\xbf" + out.getvalue().encode())  # with a BOM, like Excel's "CSV UTF-8"
    return path, starts


async def read_all(audience: Audience, base_dir: Path, limit: int, window: Window = WINDOW) -> tuple[Page, int]:
    """Every page from the start: (all targets and skips, number of calls)."""
    total, cursor, calls = Page(), None, 0
    while True:
        page = await read_page(audience, base_dir=base_dir, window=window, cursor=cursor, limit=limit)
        calls += 1
        assert len(page.targets) + len(page.skipped) <= limit
        total.targets += page.targets
        total.skipped += page.skipped
        if page.next_cursor is None:
            return total, calls
        assert page.next_cursor != cursor
        cursor = page.next_cursor


# --- files -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["jsonl", "csv"])
async def test_read_page_file_gives_every_valid_row_with_duplicates_and_skips_the_invalid(
    campaigns: Path, source: str
) -> None:
    audience, lines = write_source(campaigns, source, carts())
    no_cart = f"no cart.id (column {'cart.id' if source == 'jsonl' else 'cart_ref'!r} is missing or empty)"
    page = await read_page(audience, base_dir=campaigns, window=WINDOW, cursor=None, limit=500)
    assert page.next_cursor is None
    assert len(page.targets) == 297
    assert len({t.cart["id"] for t in page.targets}) == UNIQUE  # the 5 repeats are left to the flow ids
    assert [(s.row_number, s.reason) for s in page.skipped] == [
        (lines[50 - 1], no_cart),
        (lines[150 - 1], REASONS["bad phone"]),
        (lines[250 - 1], REASONS["bad email"]),
    ]
    first = page.targets[0]
    assert first == Target(
        cart={"id": "cart-001", "total": 1.5},
        customer={"phone": "+12125550001", "email": "customer1@example.com", "name": "Customer 1"},
        contacts=["+12125550001", "customer1@example.com"],
        row_number=lines[0],
    )
    by_id = {t.cart["id"]: t for t in page.targets}
    for n in range(1, 6):  # one of each phone format
        assert by_id[f"cart-{n:03d}"].customer["phone"] == f"+1212555{n:04d}"
    if source == "csv":
        assert by_id["cart-007"].customer["name"] == "Lovelace, Ada\nCountess"
        assert by_id["cart-008"].row_number == lines[7] == 10


@pytest.mark.parametrize("source", ["jsonl", "csv"])
@pytest.mark.parametrize("limit", [1, 7, 100, 299, 300])
async def test_read_page_file_pages_give_every_row_exactly_once(campaigns: Path, source: str, limit: int) -> None:
    audience, lines = write_source(campaigns, source, carts())
    total, calls = await read_all(audience, campaigns, limit)
    assert calls == -(-300 // limit)
    assert sorted([t.row_number for t in total.targets] + [s.row_number for s in total.skipped]) == lines
    assert len(total.targets) == 297 and len(total.skipped) == 3


async def test_read_page_jsonl_reads_nested_objects_and_skips_lines_that_are_not_objects(campaigns: Path) -> None:
    text = "\n".join(
        [
            json.dumps({"cart": {"id": 17, "url": "https://shop.example/c/17", "items": [{"sku": "A"}]}}),
            "",
            "{not json",
            "[1, 2]",
            json.dumps({"cart.id": "flat-1", "customer.email": " Ada@Example.com "}),
            json.dumps({"cart": {"id": 1.5}}),
            json.dumps({"cart": {"id": True}}),
            json.dumps({"cart": {"id": 20.0}, "customer": {"id": 33, "phone": "ada@example.com"}}),
        ]
    )
    (campaigns / "c.jsonl").write_text(text + "\n", encoding="utf-8")
    page = await read_page(
        Audience(source="jsonl", path="c.jsonl"), base_dir=campaigns, window=WINDOW, cursor=None, limit=50
    )
    assert [t.model_dump() for t in page.targets] == [
        {
            "cart": {"id": "17", "url": "https://shop.example/c/17", "items": [{"sku": "A"}]},
            "customer": {},
            "contacts": [],
            "row_number": 1,
        },
        {
            "cart": {"id": "flat-1"},
            "customer": {"email": "ada@example.com"},
            "contacts": ["ada@example.com"],
            "row_number": 5,
        },
    ]
    assert [(s.row_number, s.reason) for s in page.skipped] == [
        (3, "not JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
        (4, "not a JSON object"),
        (6, "cart.id must be text or a whole number, not float"),
        (7, "cart.id must be text or a whole number, not bool"),
        (8, "customer.phone is not a valid phone number"),  # an e-mail in the phone column
    ]


async def test_read_page_csv_skips_rows_whose_cells_do_not_match_the_header(campaigns: Path) -> None:
    (campaigns / "c.csv").write_text(
        'cart.id,customer.phone,cart.items,cart.total\nA1,2125550100,"[""sku-1""]",12\nA2,2125550101\n'
        "A3,2125550102,,7.25,extra\n\nA4,,,abc\n",
        encoding="utf-8",
    )
    page = await read_page(
        Audience(source="csv", path="c.csv"), base_dir=campaigns, window=WINDOW, cursor=None, limit=50
    )
    assert [(t.row_number, t.cart, t.customer) for t in page.targets] == [
        (2, {"id": "A1", "items": ["sku-1"], "total": 12}, {"phone": "+12125550100"}),
        (6, {"id": "A4", "total": "abc"}, {}),
    ]
    assert [(s.row_number, s.reason) for s in page.skipped] == [
        (3, "row has 2 cells, the header 4"),
        (4, "row has 5 cells, the header 4"),
    ]


async def test_read_page_file_cursor_that_is_not_at_a_line_start_is_refused(campaigns: Path) -> None:
    write_jsonl(campaigns, carts(10))
    audience = Audience(source="jsonl", path="carts.jsonl")
    page = await read_page(audience, base_dir=campaigns, window=WINDOW, cursor=None, limit=4)
    assert page.next_cursor is not None
    offset, line = page.next_cursor.split(":")
    with pytest.raises(AudienceError, match="changed while it was being read") as exc:
        await read_page(audience, base_dir=campaigns, window=WINDOW, cursor=f"{int(offset) + 3}:{line}", limit=4)
    assert exc.value.retryable is False
    with pytest.raises(AudienceError, match="invalid cursor 'abc' for a file audience"):
        await read_page(audience, base_dir=campaigns, window=WINDOW, cursor="abc", limit=4)


async def test_read_page_file_missing_or_moved_outside_is_an_error(campaigns: Path, tmp_path: Path) -> None:
    audience = Audience(source="jsonl", path="carts.jsonl")
    with pytest.raises(AudienceError, match=r"audience file 'carts\.jsonl' does not exist in "):
        await read_page(audience, base_dir=campaigns, window=WINDOW, cursor=None, limit=10)
    write_jsonl(tmp_path, carts(3), "outside.jsonl")
    (campaigns / "carts.jsonl").symlink_to(tmp_path / "outside.jsonl")  # swapped after validation
    with pytest.raises(AudienceError, match="leads outside the campaigns directory"):
        await read_page(audience, base_dir=campaigns, window=WINDOW, cursor=None, limit=10)


async def test_read_page_limit_must_be_positive(campaigns: Path) -> None:
    with pytest.raises(ValueError, match="limit must be at least 1, got 0"):
        await read_page(FLAT, base_dir=campaigns, window=WINDOW, cursor=None, limit=0)


# --- mapping -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+1 (212) 555-0123", "+12125550123"),
        ("(212) 555-0123", "+12125550123"),
        ("212.555.0123", "+12125550123"),
        ("tel:+44 20 7946 0958", "+442079460958"),
        ("whatsapp:+4915123456789", "+4915123456789"),
        (2125550123, "+12125550123"),
    ],
)
def test_map_row_phone_becomes_e164(raw: object, expected: str) -> None:
    target = map_row(Audience(source="http", url="https://x.example/"), {"cart.id": "c", "customer.phone": raw}, 1)
    assert isinstance(target, Target)
    assert target.customer == {"phone": expected}
    assert target.contacts == [expected]


@pytest.mark.parametrize("raw", ["12", "call me", "+1 212", ["2125550123"]])
def test_map_row_bad_phone_is_skipped_without_repeating_it(raw: object) -> None:
    skip = map_row(Audience(source="http", url="https://x.example/"), {"cart.id": "c", "customer.phone": raw}, 4)
    assert skip == Skip(reason="customer.phone is not a valid phone number", row_number=4)


def lists_in_lists(levels: int) -> list[Any]:
    nested: list[Any] = []
    for _ in range(levels - 1):
        nested = [nested]
    return nested


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"cart.id": "k\x00"}, "cart.id contains a control character (U+0000)"),
        ({"cart.id": "k" * 256}, "cart.id is longer than 255 bytes (UTF-8)"),
        ({"cart.id": "k" * 3000}, "cart.id is longer than 255 bytes (UTF-8)"),
        ({"cart.id": "k", "customer.id": "c\x1b"}, "customer.id contains a control character (U+001B)"),
        ({"cart.id": "k", "customer.id": "ü" * 128}, "customer.id is longer than 255 bytes (UTF-8)"),
        ({"cart.id": "k", "customer.email": "ann\x00@example.com"}, "customer.email is not a valid e-mail address"),
        ({"cart.id": "k", "cart.items": lists_in_lists(32)}, "cart is nested deeper than 32 levels"),
    ],
    ids=["nul-cart", "cart-256", "cart-3000", "escape-customer", "customer-256-bytes", "nul-email", "deep-items"],
)
def test_map_row_id_temporal_would_refuse_is_skipped_without_repeating_it(row: dict[str, Any], reason: str) -> None:
    """A NUL breaks visibility queries; an id over 255 bytes could push the flow id or a search attribute over
    Temporal's limits (a failed page, a stalled flow): the row is skipped, its reason free of the value."""
    skip = map_row(Audience(source="http", url="https://x.example/"), row, 7)
    assert skip == Skip(reason=reason, row_number=7)


def test_map_row_id_of_255_bytes_is_kept() -> None:
    target = map_row(
        Audience(source="http", url="https://x.example/"), {"cart.id": "k" * 255, "customer.id": "é" * 127}, 1
    )
    assert isinstance(target, Target)
    assert (target.cart["id"], target.customer["id"]) == ("k" * 255, "é" * 127)


def test_map_row_same_contact_twice_is_one_contact_and_only_our_fields_are_kept() -> None:
    audience = Audience(source="http", url="https://x.example/", fields={"customer.phone": "contact.sms"})
    row = {
        "cart": {"id": "c1", "secret": "x"},
        "contact": {"sms": "+12125550123"},
        "customer": {"email": "a@b.example", "timezone": "Europe/Berlin", "address": "1 Main St"},
        "customer.phone": "+19999999999",  # not read: customer.phone is mapped to contact.sms
    }
    target = map_row(audience, row, 1)
    assert target == Target(
        cart={"id": "c1"},
        customer={"phone": "+12125550123", "email": "a@b.example", "timezone": "Europe/Berlin"},
        contacts=["+12125550123", "a@b.example"],
        row_number=1,
    )


# --- sql ---------------------------------------------------------------------------------------------------

NOW = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def shop_db(campaigns: Path) -> Path:
    """campaigns/shop.db: 120 carts created one a minute before NOW (cart i at NOW - i minutes), in UTC."""
    path = campaigns / "shop.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    meta = sa.MetaData()
    table = sa.Table(
        "carts",
        meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("cart_ref", sa.String),
        sa.Column("phone", sa.String),
        sa.Column("total", sa.Float),
        sa.Column("created_at", sa.DateTime),
    )
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            table.insert(),
            [
                {
                    "id": i,
                    "cart_ref": f"db-{i}",
                    "phone": "12" if i == 30 else f"(212) 555-{i:04d}",
                    "total": i + 0.25,
                    "created_at": (NOW - timedelta(minutes=i)).replace(tzinfo=None),
                }
                for i in range(120)
            ],
        )
    engine.dispose()
    return path


SQL = Audience(
    source="sql",
    url="sqlite:///shop.db",  # relative: to the campaign file's directory
    query="SELECT cart_ref, phone, total, created_at FROM carts\n"
    "WHERE created_at >= :since AND created_at < :until ORDER BY created_at, id;",
    fields={"cart.id": "cart_ref", "customer.phone": "phone", "cart.total": "total"},
)


@pytest.mark.parametrize("limit", [7, 49, 50, 500])
async def test_read_page_sql_reads_the_window_in_pages(campaigns: Path, shop_db: Path, limit: int) -> None:
    window = Window(since=NOW - timedelta(minutes=60), until=NOW - timedelta(minutes=10))
    total, calls = await read_all(SQL, campaigns, limit, window)
    # created_at in [NOW-60m, NOW-10m): carts 11..60; cart 30 has a bad phone.
    assert sorted(int(t.cart["id"].removeprefix("db-")) for t in total.targets) == [i for i in range(11, 61) if i != 30]
    assert total.skipped == [Skip(reason="customer.phone is not a valid phone number", row_number=31)]
    assert calls == -(-50 // limit)  # one row more than asked tells whether another page follows
    newest = total.targets[-1]
    assert newest.cart == {"id": "db-11", "total": 11.25}
    assert newest.customer == {"phone": "+12125550011"}
    assert newest.row_number == 50


async def test_read_page_sql_window_bounds_are_since_inclusive_until_exclusive(campaigns: Path, shop_db: Path) -> None:
    first = next_window(SQL, now=NOW - timedelta(minutes=5))  # lookback 1h: [NOW-65m, NOW-5m)
    second = next_window(SQL, now=NOW, previous_until=first.until)  # [NOW-5m, NOW)
    seen = []
    for window in (first, second):
        page = await read_page(SQL, base_dir=campaigns, window=window, cursor=None, limit=500)
        seen += [t.cart["id"] for t in page.targets]
    assert sorted(int(i.removeprefix("db-")) for i in seen) == [i for i in range(1, 66) if i != 30]
    assert len(seen) == len(set(seen))  # consecutive windows never share a row


async def test_read_page_sql_errors_say_whether_a_retry_can_help(campaigns: Path, shop_db: Path) -> None:
    wrong = SQL.model_copy(update={"query": "SELECT * FROM nope ORDER BY 1"})
    with pytest.raises(
        AudienceError, match=r"audience query failed: \(sqlite3.OperationalError\) no such table: nope"
    ) as exc:
        await read_page(wrong, base_dir=campaigns, window=WINDOW, cursor=None, limit=10)
    assert exc.value.retryable is False
    unreachable = SQL.model_copy(update={"url": "sqlite:///missing-dir/shop.db"})
    with pytest.raises(AudienceError, match="cannot connect to the database") as exc:
        await read_page(unreachable, base_dir=campaigns, window=WINDOW, cursor=None, limit=10)
    assert exc.value.retryable is True


# --- http --------------------------------------------------------------------------------------------------

TOKEN = "s3cret-token"


@dataclass
class Api:
    """A local JSON API: `pages` maps a path to (status, body); every request is recorded."""

    pages: dict[str, tuple[int, Any]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    base: str = ""
    token: str | None = TOKEN


@pytest.fixture
def serve() -> Iterator[Any]:
    with contextlib.ExitStack() as servers:

        def start(api: Api) -> Api:
            class Handler(QuietHandler):
                def do_GET(self) -> None:
                    parts = urlsplit(self.path)
                    auth = self.headers.get("Authorization")
                    api.requests.append({"path": parts.path, "query": parse_qs(parts.query), "auth": auth})
                    if api.token is not None and auth != f"Bearer {api.token}":
                        status, body = 401, {"detail": "unauthorized"}
                    else:
                        status, body = api.pages.get(parts.path, (404, {"detail": "no such page"}))
                    self.send_json(status, json.dumps(body).encode())

            api.base = servers.enter_context(http_server(Handler))
            return api

        yield start


def item(n: int, **extra: Any) -> dict[str, Any]:
    return {"cart": {"id": f"h-{n}"}, "customer": {"id": n, "phone": f"+1 212 555 {n:04d}"}, **extra}


@pytest.fixture
def api(serve: Any, monkeypatch: pytest.MonkeyPatch) -> Api:
    monkeypatch.setenv("SHOP_TOKEN", TOKEN)
    return serve(
        Api(
            pages={
                "/carts": (200, {"items": [item(1), item(2), "junk", item(3)], "next": "/carts/p2?after=h-3"}),
                "/carts/p2": (200, {"items": [item(4), {"cart": {}}], "next": None}),
            }
        )
    )


def http_audience(api: Api, **changes: Any) -> Audience:
    return Audience.model_validate(
        {"source": "http", "url": f"{api.base}/carts?shop=7", "token_env": "SHOP_TOKEN"} | changes
    )


async def test_read_page_http_follows_next_with_the_token_and_sends_the_window(api: Api) -> None:
    total, calls = await read_all(http_audience(api), Path("."), 500)
    assert calls == 2
    assert [t.cart["id"] for t in total.targets] == ["h-1", "h-2", "h-3", "h-4"]
    assert [t.customer["id"] for t in total.targets] == ["1", "2", "3", "4"]
    assert [t.row_number for t in total.targets] == [1, 2, 4, 5]
    assert [(s.row_number, s.reason) for s in total.skipped] == [
        (3, "not a JSON object"),
        (6, "no cart.id (column 'cart.id' is missing or empty)"),
    ]
    assert api.requests == [
        {
            "path": "/carts",
            "query": {"shop": ["7"], "since": ["2030-01-02T03:00:00Z"], "until": ["2030-01-02T04:00:00Z"]},
            "auth": f"Bearer {TOKEN}",
        },
        {"path": "/carts/p2", "query": {"after": ["h-3"]}, "auth": f"Bearer {TOKEN}"},
    ]


async def test_read_page_http_page_bigger_than_limit_is_read_in_parts(api: Api) -> None:
    total, calls = await read_all(http_audience(api), Path("."), 3)
    assert calls == 3  # /carts items 1-3, /carts item 4 (fetched again), /carts/p2
    assert sorted([t.row_number for t in total.targets] + [s.row_number for s in total.skipped]) == [1, 2, 3, 4, 5, 6]
    assert [r["path"] for r in api.requests] == ["/carts", "/carts", "/carts/p2"]


async def test_read_page_http_plain_array_is_one_page_without_a_token(serve: Any) -> None:
    api = serve(Api(pages={"/all": (200, [item(1), item(2)])}, token=None))
    audience = Audience(source="http", url=f"{api.base}/all")
    page = await read_page(audience, base_dir=Path("."), window=WINDOW, cursor=None, limit=10)
    assert [t.cart["id"] for t in page.targets] == ["h-1", "h-2"] and page.next_cursor is None
    assert api.requests[0]["auth"] is None


async def test_read_page_http_token_is_not_sent_to_another_origin(serve: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOP_TOKEN", TOKEN)
    elsewhere = serve(Api(pages={"/more": (200, {"items": [item(9)]})}, token=None))
    api = serve(Api(pages={"/carts": (200, {"items": [item(1)], "next": f"{elsewhere.base}/more"})}))
    total, _ = await read_all(http_audience(api), Path("."), 10)
    assert [t.cart["id"] for t in total.targets] == ["h-1", "h-9"]
    assert api.requests[0]["auth"] == f"Bearer {TOKEN}"
    assert elsewhere.requests == [{"path": "/more", "query": {}, "auth": None}]


async def test_read_page_http_failures(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    api.pages["/down"] = (503, {"detail": "maintenance"})
    api.pages["/odd"] = (200, {"rows": []})
    api.pages["/loop"] = (200, {"items": [], "next": "/loop"})
    cases = [
        (http_audience(api, url=f"{api.base}/down"), f"GET {api.base}/down answered 503", True),
        (http_audience(api, url=f"{api.base}/odd"), 'expected a JSON array or {"items": [...], "next": url}', False),
        (http_audience(api, url=f"{api.base}/loop"), "gave a bad next page URL", False),
        (http_audience(api, token_env="OTHER_TOKEN"), f"GET {api.base}/carts answered 401", False),
    ]
    monkeypatch.setenv("OTHER_TOKEN", "wrong")
    for audience, message, retryable in cases:
        with pytest.raises(AudienceError) as exc:
            await read_all(audience, Path("."), 10)
        assert message in str(exc.value)
        assert exc.value.retryable is retryable
    monkeypatch.delenv("SHOP_TOKEN")
    before = len(api.requests)
    with pytest.raises(AudienceError, match=r"environment variable SHOP_TOKEN \(token_env\) is not set"):
        await read_page(http_audience(api), base_dir=Path("."), window=WINDOW, cursor=None, limit=10)
    assert len(api.requests) == before  # nothing sent without the token


# --- window ------------------------------------------------------------------------------------------------


def test_window_is_utc_and_ordered() -> None:
    tokyo = datetime(2030, 1, 2, 12, 0, tzinfo=ZoneInfo("Asia/Tokyo"))
    window = Window(since=tokyo, until=tokyo + timedelta(hours=1))
    assert window.since == datetime(2030, 1, 2, 3, 0, tzinfo=UTC) and window.since.tzinfo is UTC
    with pytest.raises(ValueError, match="since must not be after until"):
        Window(since=tokyo, until=tokyo - timedelta(seconds=1))
    with pytest.raises(ValueError, match="timezone"):
        Window(since=datetime(2030, 1, 1), until=datetime(2030, 1, 2))


def test_next_window_first_run_looks_back_then_continues() -> None:
    audience = Audience(source="sql", url="sqlite://", query="SELECT 1 ORDER BY 1", lookback="90m")
    first = next_window(audience, now=NOW)
    assert (first.since, first.until) == (NOW - timedelta(minutes=90), NOW)
    later = next_window(audience, now=NOW + timedelta(hours=1), previous_until=first.until)
    assert (later.since, later.until) == (NOW, NOW + timedelta(hours=1))


# --- validation --------------------------------------------------------------------------------------------

CAMPAIGN = """\
[campaign]
id = "carts"

[schedule]
cron = "0 * * * *"

[workflow]
start_step = "a"

[workflow.steps.a]
node = "send_message"

[audience]
"""
AUDIENCE_LINE = 13


def load(campaigns: Path, audience: str) -> tuple[Campaign | None, list[str]]:
    path = campaigns / "c.toml"
    path.write_text(CAMPAIGN + audience, encoding="utf-8")
    campaign, problems = load_campaign(path)
    return campaign, [str(p) for p in problems]


FIELD_LIST = ", ".join(AUDIENCE_FIELDS)


@pytest.mark.parametrize(
    ("audience", "expected"),
    [
        (
            'source = "jsonl"\npath = "../x.jsonl"\n',
            "15: audience.path: '../x.jsonl' leaves the campaigns directory ('..')",
        ),
        (
            'source = "csv"\npath = "data/../../x.csv"\n',
            "15: audience.path: 'data/../../x.csv' leaves the campaigns directory ('..')",
        ),
        (
            'source = "jsonl"\npath = "/etc/passwd"\n',
            "15: audience.path: '/etc/passwd' must be relative to the campaign file's directory, not absolute",
        ),
        ('source = "jsonl"\n', "13: audience.path: required for source 'jsonl'"),
        ('source = "http"\n', "13: audience.url: required for source 'http'"),
        (
            'source = "http"\nurl = "ftp://shop.example/carts"\n',
            "15: audience.url: 'ftp://shop.example/carts' is not an http(s) URL",
        ),
        (
            'source = "http"\nurl = "https://shop.example/carts"\ntoken_env = "sk_live_123-abc"\n',
            "16: audience.token_env: must be the name of an environment variable (letters, digits, '_'),"
            " e.g. 'SHOP_API_TOKEN', never the token itself",
        ),
        (
            'source = "http"\nurl = "https://shop.example/carts"\npath = "c.jsonl"\n',
            "16: audience.path: not used by source 'http' (only by jsonl and csv)",
        ),
        ('source = "sql"\nurl = "sqlite:///shop.db"\n', "13: audience.query: required for source 'sql'"),
        ('source = "sql"\nquery = "SELECT 1 ORDER BY 1"\n', "13: audience.url: required for source 'sql'"),
        (
            'source = "sql"\nurl = "shop.db"\nquery = "SELECT 1 ORDER BY 1"\n',
            "15: audience.url: 'shop.db' is not a SQLAlchemy URL (dialect+driver://user@host/database)",
        ),
        (
            'source = "sql"\nurl = "nosuchdb://h/db"\nquery = "SELECT 1 ORDER BY 1"\n',
            "15: audience.url: unknown database dialect 'nosuchdb'",
        ),
        (
            'source = "sql"\nurl = "sqlite:///shop.db"\nquery = "SELECT * FROM carts WHERE shop = :shop ORDER BY id"\n',
            "16: audience.query: unknown parameter :shop (a query may use :since and :until)",
        ),
        (
            'source = "sql"\nurl = "sqlite:///shop.db"\nquery = "SELECT * FROM carts WHERE created_at >= :since"\n',
            "16: audience.query: needs an ORDER BY on a unique key (e.g. ORDER BY created_at, id): rows are read in"
            " pages with LIMIT/OFFSET, and without a stable order pages skip or repeat rows",
        ),
        (
            'source = "sql"\nurl = "sqlite:///shop.db"\nquery = "SELECT * FROM carts ORDER BY id LIMIT 100;"\n',
            "16: audience.query: must not end with LIMIT/OFFSET: the scheduler reads the rows in pages with its own",
        ),
        ('source = "jsonl"\npath = "c.jsonl"\nlookback = "0s"\n', "16: audience.lookback: must be longer than 0s"),
        ('source = "jsonl"\npath = "c.jsonl"\ntokn = "X"\n', "16: audience.tokn: unknown key"),
        ('source = "jsonl"\npath = "c.jsonl"\ndsn = "X"\n', "16: audience.dsn: unknown key"),
        (
            'source = "jsonl"\npath = "c.jsonl"\n\n[audience.fields]\n"cart.id" = "ref"\n"cart.coupon" = "code"\n',
            f"19: audience.fields.cart.coupon: unknown field 'cart.coupon' (fields: {FIELD_LIST})",
        ),
        (
            'source = "jsonl"\npath = "c.jsonl"\n\n[audience.fields]\n"cart.id" = " "\n',
            "18: audience.fields.cart.id: the source's column name is empty",
        ),
    ],
)
def test_load_campaign_audience_error_is_located(campaigns: Path, audience: str, expected: str) -> None:
    campaign, problems = load(campaigns, audience)
    assert problems == [f"campaigns/c.toml:{expected}"]
    assert campaign is None


def test_load_campaign_audience_symlink_out_of_the_directory_is_refused(campaigns: Path, tmp_path: Path) -> None:
    (tmp_path / "private.jsonl").write_text("{}\n", encoding="utf-8")
    (campaigns / "data").mkdir()
    (campaigns / "data" / "carts.jsonl").symlink_to(tmp_path / "private.jsonl")
    (campaigns / "inside.jsonl").symlink_to(campaigns / "data" / "carts.jsonl")  # fine until it leaves
    campaign, problems = load(campaigns, 'source = "jsonl"\npath = "data/carts.jsonl"\n')
    assert problems == [
        f"campaigns/c.toml:15: audience.path: 'data/carts.jsonl' leads outside the campaigns directory"
        f" (to {(tmp_path / 'private.jsonl').resolve()})"
    ]
    assert campaign is None
    (campaigns / "data" / "carts.jsonl").unlink()
    (campaigns / "data" / "carts.jsonl").write_text("{}\n", encoding="utf-8")
    campaign, problems = load(campaigns, 'source = "jsonl"\npath = "inside.jsonl"\n')
    assert problems == [] and campaign is not None


def test_load_campaign_audience_problems_come_with_the_others(campaigns: Path) -> None:
    text = 'source = "sql"\nurl = "nosuchdb://h/db"\nquery = "SELECT 1 ORDER BY 1"\n'  # found by audience_problems
    path = campaigns / "c.toml"
    path.write_text(CAMPAIGN.replace('node = "send_message"', 'node = "send_mesage"') + text, encoding="utf-8")
    _, problems = load_campaign(path)
    assert [(p.line, p.key) for p in problems] == [(11, "workflow.steps.a.node"), (15, "audience.url")]


def test_load_campaign_audience_password_in_url_is_a_warning(campaigns: Path) -> None:
    campaign, problems = load(
        campaigns,
        'source = "sql"\nurl = "postgresql+psycopg://shop:hunter2@db.internal/shop"\n'
        'query = "SELECT * FROM carts WHERE created_at >= :since AND created_at < :until ORDER BY id"\n',
    )
    assert problems == [
        "campaigns/c.toml:15: audience.url: warning: the url holds a password, which would be stored in the"
        " Temporal schedule: leave it out (PostgreSQL: PGPASSWORD or ~/.pgpass)"
    ]
    assert campaign is not None and campaign.audience is not None


def test_load_campaign_audience_valid_and_survives_a_temporal_round_trip(campaigns: Path) -> None:
    campaign, problems = load(
        campaigns,
        'source = "http"\nurl = "https://shop.example/carts"\ntoken_env = "SHOP_TOKEN"\nlookback = "2h"\n\n'
        '[audience.fields]\n"cart.id" = "cart_ref"\n"customer.phone" = "mobile"\n',
    )
    assert problems == []
    assert campaign is not None and campaign.audience is not None
    assert campaign.audience.lookback == timedelta(hours=2)
    again = Campaign.model_validate_json(campaign.model_dump_json())
    assert again.audience == campaign.audience


def test_deep_checks_warn_about_a_missing_file_and_columns_not_in_the_csv_header(campaigns: Path) -> None:
    audience = 'source = "csv"\npath = "carts.csv"\n\n[audience.fields]\n"customer.phone" = "mobile"\n'
    campaign, problems = load(campaigns, audience)
    assert problems == [] and campaign is not None
    found = [str(p) for p in deep_checks(campaign, ChannelsSettings())]
    assert found == [
        "campaigns/c.toml:15: audience.path: warning: 'carts.csv' does not exist (yet): runs fail until it does"
    ]
    (campaigns / "carts.csv").write_text("ref,phone\nc1,2125550100\n", encoding="utf-8")
    found = [str(p) for p in deep_checks(campaign, ChannelsSettings())]
    assert found == [
        "campaigns/c.toml:17: audience.fields: warning: no column 'cart.id' in 'carts.csv': map \"cart.id\" to"
        " the cart id column",
        "campaigns/c.toml:18: audience.fields.customer.phone: warning: column 'mobile' is not in the header of"
        " 'carts.csv'",
    ]


def test_deep_checks_warn_about_a_database_driver_that_is_not_installed(campaigns: Path) -> None:
    if importlib.util.find_spec("MySQLdb") is not None:
        pytest.skip("the MySQLdb driver is installed here")
    campaign, problems = load(
        campaigns,
        'source = "sql"\nurl = "mysql+mysqldb://db/shop"\nquery = "SELECT * FROM carts ORDER BY id"\n',
    )
    assert campaign is not None, problems
    found = [str(p) for p in deep_checks(campaign, ChannelsSettings())]
    assert len(found) == 1 and found[0].startswith(
        "campaigns/c.toml:15: audience.url: warning: the database driver is not installed here ("
    )
