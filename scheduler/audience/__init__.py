"""Audiences: the carts a campaign run starts flows for, read page by page from a file, an HTTP API or a database.

A run reads its audience in an activity that heartbeats between pages, so reading is resumable:
`read_page` takes an opaque cursor and gives the next one, and a retried activity carries on from the
last cursor it reported instead of starting over. Each call reads at most `limit` rows.

Rows become `Target`s (cart, customer, normalized contacts) through `[audience.fields]`; a row that
cannot become a flow is a `Skip` with its reason. Duplicate carts are *not* removed here: a run may
meet the same cart on two pages, in two runs, or twice in one file, and the flow id
`<campaign id>-<cart id>` is what keeps each cart to one flow.

The window: a run covers `[since, until)`, from where the previous successful run stopped (the first
run looks back `audience.lookback`). `sql` gets it as `:since`/`:until`, `http` as `since`/`until`
query parameters; `jsonl`/`csv` files are read whole every run.

One module per source (`files`, `http`, `sql`), the field mapping (`fields`), paging (`pages`), the
`[audience]` table's model (`model`) and its load-time checks (`checks`). The names callers use are
re-exported here, each imported on first use: loading a campaign file needs only the model and the
checks, not the readers' HTTP and database libraries.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scheduler.audience.checks import audience_problems, audience_warnings
    from scheduler.audience.fields import Skip, Target, map_row
    from scheduler.audience.http import HTTP_TIMEOUT
    from scheduler.audience.model import AUDIENCE_FIELDS, Audience
    from scheduler.audience.pages import Page, read_page

_HOMES = {
    "AUDIENCE_FIELDS": "model",
    "Audience": "model",
    "audience_problems": "checks",
    "audience_warnings": "checks",
    "Skip": "fields",
    "Target": "fields",
    "map_row": "fields",
    "HTTP_TIMEOUT": "http",
    "Page": "pages",
    "read_page": "pages",
}
__all__ = [
    "AUDIENCE_FIELDS",
    "HTTP_TIMEOUT",
    "Audience",
    "Page",
    "Skip",
    "Target",
    "audience_problems",
    "audience_warnings",
    "map_row",
    "read_page",
]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
