"""Search attributes: the names the contract fixes, in one place. Register all before any worker starts."""

from __future__ import annotations

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
)
