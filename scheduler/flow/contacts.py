"""Contacts a reply can come from, in one normal form: E.164 phone numbers and lower-cased e-mail addresses.

A flow records its customer's contacts in the search attribute `CustomerContact` when it starts, and
a reply is routed by its sender's contact: both sides must write the same number the same way
(`+1 (212) 555-0123` and `+12125550123` are one customer). Pure and deterministic, so workflow code
may call it too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import phonenumbers

from scheduler.errors import InvalidContact, clip
from scheduler.flow.limits import id_problem

DEFAULT_REGION = "US"
"""Region of phone numbers written without a country code (`(212) 555-0123`).

A constant rather than a config key: flows (workers) and the API must agree on it, or a number
recorded at start would never match the same number in a reply.
"""
_SCHEMES = ("tel:", "mailto:", "whatsapp:", "sms:")
# Plain addresses only: quotes and backslashes (legal in a quoted local part, unheard of in practice)
# are refused, so a normalized contact never needs more than the query escaping of a `'`.
_EMAIL = re.compile(r"[^@\s\"\\]+@[^@\s\"\\]+\.[^@\s\"\\.]+")


def normalize_contact(value: str) -> str:
    """The normal form of a phone number (E.164) or e-mail address (lower case).

    A contact must also be a valid id (`scheduler.flow.limits`): it is a search attribute value and is
    looked up in visibility queries, which a NUL breaks.

    Raises:
        InvalidContact: `value` is neither (the message says why, naming the value).
    """
    text = value.strip()
    if text and (problem := id_problem(text)):
        raise InvalidContact(f"{clip(value, 40)!r} {problem}")
    for scheme in _SCHEMES:
        if text.lower().startswith(scheme):
            text = text[len(scheme) :].strip()
            break
    if "@" in text:
        if not _EMAIL.fullmatch(text):
            raise InvalidContact(f"{value!r} is not an e-mail address")
        return text.lower()
    try:
        number = phonenumbers.parse(text, DEFAULT_REGION)
    except phonenumbers.NumberParseException as exc:
        raise InvalidContact(f"{value!r} is neither a phone number nor an e-mail address ({exc})") from None
    if not phonenumbers.is_possible_number(number):
        raise InvalidContact(f"{value!r} is not a possible phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def customer_contacts(customer: Mapping[str, Any]) -> list[str]:
    """The normalized `phone` and `email` of a customer record; missing or invalid ones are left out.

    A flow still starts for a customer with a bad contact (its message may go out some other way);
    it just cannot be found by that contact.
    """
    contacts: list[str] = []
    for field in ("phone", "email"):
        raw = customer.get(field)
        if not isinstance(raw, str) or not raw.strip():
            continue
        try:
            contact = normalize_contact(raw)
        except InvalidContact:
            continue
        if contact not in contacts:
            contacts.append(contact)
    return contacts


def redact(contact: str) -> str:
    """A contact as logs may show it: enough to tell two apart, not enough to reach the person."""
    if "@" in contact:
        local, _, domain = contact.rpartition("@")
        return f"{local[:1]}***@{domain}"
    if len(contact) <= 6:
        return "*" * len(contact)
    return f"{contact[:3]}{'*' * (len(contact) - 5)}{contact[-2:]}"
