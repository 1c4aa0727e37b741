"""The README says what the project does: its examples are checked against the shipped files."""

from __future__ import annotations

import re
import tomllib
from typing import Any

from tests.helpers import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def _flatten(data: dict[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    out: dict[tuple[str, ...], Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value and key not in ("condition", "params"):
            out |= _flatten(value, (*prefix, key))
        else:
            out[(*prefix, key)] = value
    return out


def test_readme_campaign_excerpt_matches_the_shipped_file() -> None:
    """The campaign file reference is an excerpt of campaigns/abandoned_cart.toml: every key it shows has the
    shipped value (a README that maps a STOP to another message would teach users to text opted-out people)."""
    block = re.search(r"Its first steps.*?```toml\n(.*?)```", README, re.DOTALL)
    assert block is not None
    excerpt = _flatten(tomllib.loads(block.group(1)))
    shipped = _flatten(tomllib.loads((ROOT / "campaigns" / "abandoned_cart.toml").read_text(encoding="utf-8")))

    assert len(excerpt) > 15
    assert {key: shipped.get(key) for key in excerpt} == excerpt
