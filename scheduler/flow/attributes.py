"""Search attributes: the names the contract fixes, in one place. Register all before any worker starts."""

from __future__ import annotations

import hashlib
import re
from typing import Any

from temporalio.common import SearchAttributeKey

CLIENT_ANSWERED = SearchAttributeKey.for_bool("ClientAnswered")
CLIENT_ANSWERED_AT = SearchAttributeKey.for_datetime("ClientAnsweredAt")
CAMPAIGN_ID = SearchAttributeKey.for_keyword("CampaignId")
CART_ID = SearchAttributeKey.for_keyword("CartId")
CUSTOMER_ID = SearchAttributeKey.for_keyword("CustomerId")
CURRENT_STEP = SearchAttributeKey.for_keyword("CurrentStep")
DEFINITION_VERSION = SearchAttributeKey.for_keyword("DefinitionVersion")
CUSTOMER_CONTACT = SearchAttributeKey.for_keyword_list("CustomerContact")
"""Normalized phones/e-mails a reply can come from (`scheduler.flow.contacts`), set at start."""
REPLY_IDS = SearchAttributeKey.for_keyword_list("ReplyIds")
"""The last `MAX_REPLY_IDS` replies a flow handled, as `reply_key`s: how a redelivered reply is recognised."""
OUTCOME = SearchAttributeKey.for_keyword("Outcome")
"""How a flow ended (`completed`, `converted`, `failed`, `opted_out`), set when it ends; mirrors the memo `outcome`."""
MESSAGED = SearchAttributeKey.for_bool("Messaged")
"""True once a customer message of the flow went (written with the flow's state: before a wait, at the end);
what an experiment's results count as messaged. Unset on flows started before `FlowInput.revision` 3."""
VARIANT = SearchAttributeKey.for_keyword("Variant")
"""The variant a `split` step assigned, as `experiment:variant` (a flow through two splits: the later one). A
Keyword, not a list: SQL visibility stores allow three KeywordList attributes in all."""
REPLY_INTENT = SearchAttributeKey.for_keyword("ReplyIntent")
"""The intent the flow's latest `wait_answer` with intents took, or `NO_INTENT` when the reply matched none (written
with the flow's state); never the reply's text, which may hold anything a customer typed."""
NO_INTENT = "(none)"
"""`ReplyIntent` of a reply that matched no intent: not a plain name, so no intent is called so."""
CAMPAIGN_SHA256 = SearchAttributeKey.for_keyword("CampaignSha256")
"""On schedules: hash of the campaign file's canonical content, updated on every apply."""

ALL: tuple[SearchAttributeKey[Any], ...] = (
    CLIENT_ANSWERED,
    CLIENT_ANSWERED_AT,
    CAMPAIGN_ID,
    CART_ID,
    CUSTOMER_ID,
    CURRENT_STEP,
    DEFINITION_VERSION,
    CUSTOMER_CONTACT,
    CAMPAIGN_SHA256,
    REPLY_IDS,
    OUTCOME,
    VARIANT,
    MESSAGED,
    REPLY_INTENT,
)

MAX_REPLY_IDS = 20
"""A search attribute value is limited in size (2 KiB by default; a flow whose upsert exceeds it stalls):
20 keys of at most 64 characters stay well below."""
_PLAIN_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def reply_key(reply_id: str) -> str:
    """How a reply id is kept in `ReplyIds`: as is when short and plain (Twilio's `SM…`, `msg_…`), else hashed.

    Hashing the rest keeps every value short and free of quotes and backslashes, which SQL-based
    visibility stores do not escape reliably (see `scheduler.visibility.quote`).
    """
    if _PLAIN_ID.fullmatch(reply_id):
        return reply_id
    return "sha256:" + hashlib.sha256(reply_id.encode()).hexdigest()[:40]


CONVERSION_KEY_PREFIX = "conversion:"


def conversion_key(conversion_id: str) -> str:
    """How a conversion id is kept in `ReplyIds`, apart from reply ids (which are `reply_key`s of their own)."""
    return reply_key(CONVERSION_KEY_PREFIX + conversion_id)
