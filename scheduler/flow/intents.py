"""Reply intents: which of a `wait_answer` step's intents a customer's reply asks for, by phrase.

Pure functions, used inside flows (deterministic: no IO, no `hash()`), by validation, simulation and tests.
Phrases only, never regular expressions from campaign files: matching stays linear in the reply's length.

A reply matches a phrase when, both normalized (`normalize`), the reply equals it or starts with it followed by a
word boundary: "yes please" matches "yes", "yesterday" does not. Intents are tried in the order given.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping

MAX_PHRASES = 100
"""Phrases one intent may have."""
MAX_PHRASE = 64
"""Characters one phrase may have, normalized."""
REPLY_SHOWN = 160
"""Characters of a reply that matched no intent kept in the memo (`StepRecord.reply`), for the owner to read."""


def normalize(text: str | None) -> str:
    """Unicode NFKC (full-width letters are plain ones), case-folded, without surrounding whitespace and punctuation
    (categories P*; symbols such as "👍" stay)."""
    folded = unicodedata.normalize("NFKC", text or "").casefold()
    start, end = 0, len(folded)
    while start < end and _edge(folded[start]):
        start += 1
    while end > start and _edge(folded[end - 1]):
        end -= 1
    return folded[start:end]


def _edge(char: str) -> bool:
    return char.isspace() or unicodedata.category(char).startswith("P")


def starts_with_phrase(reply: str, phrase: str) -> bool:
    """`reply` (normalized) is `phrase` (normalized), or begins with it and the next character is no letter or digit."""
    if not phrase or not reply.startswith(phrase):
        return False
    return len(reply) == len(phrase) or unicodedata.category(reply[len(phrase)])[0] not in "LN"


def match_intent(text: str | None, intents: Mapping[str, Iterable[str]]) -> str | None:
    """The first intent (in the mapping's order) with a phrase `text` matches, or None."""
    reply = normalize(text)
    for name, phrases in intents.items():
        if any(starts_with_phrase(reply, normalize(p)) for p in phrases):
            return name
    return None
