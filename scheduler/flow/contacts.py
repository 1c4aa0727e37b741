"""Contacts a reply can come from, in one normal form: E.164 phone numbers and e-mail addresses.

A flow records its customer's contacts in the search attribute `CustomerContact` when it starts, a
reply is routed by its sender's contact, and suppressions and frequency caps are kept per contact: every
side must write one contact the same way (`+1 (212) 555-0123` and `+12125550123` are one customer, and
so are `Ann@Bücher.de`, `ann@xn--bcher-kva.de` and either with a zero-width space). Pure and
deterministic (no DNS lookups), so workflow code may call it too.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from typing import Any

import email_validator
import phonenumbers

from scheduler.errors import InvalidContact, clip
from scheduler.flow.limits import id_problem

DEFAULT_REGION = "US"
"""Region of phone numbers written without a country code (`(212) 555-0123`).

A constant rather than a config key: flows (workers) and the API must agree on it, or a number
recorded at start would never match the same number in a reply.
"""
_SCHEMES = ("tel:", "mailto:", "whatsapp:", "sms:")


def normalize_contact(value: str) -> str:
    """The normal form of a phone number (E.164) or e-mail address.

    An address is checked and normalized by `email_validator` (syntax only, offline): its local part as
    given (Unicode NFC) in lower case, its domain in lower-case ASCII (IDNA 2008 / UTS 46: `bücher.de` is
    `xn--bcher-kva.de`), the form an SMTP server takes. Quoted local parts, domain literals and special-use
    domains (`.local`, `.test`) are refused, so a normalized contact never needs more than the query
    escaping of a `'`. Invisible format characters (Unicode category Cf: zero-width spaces, direction
    marks, soft hyphens) are dropped first, from phone numbers too: they are copy-and-paste debris,
    never part of a contact.

    A contact must also be a valid id (`scheduler.flow.limits`): it is a search attribute value and is
    looked up in visibility queries, which a NUL breaks.

    Raises:
        InvalidContact: `value` is neither (the message says why, naming the value).
    """
    text = _visible(value)
    if text and (problem := id_problem(text)):
        raise InvalidContact(f"{clip(value, 40)!r} {problem}")
    for scheme in _SCHEMES:
        if text.lower().startswith(scheme):
            text = text[len(scheme) :].strip()
            break
    if "@" in text:
        address = _address(value, text)
        return f"{address.local_part.lower()}@{address.ascii_domain.lower()}"
    try:
        number = phonenumbers.parse(text, DEFAULT_REGION)
    except phonenumbers.NumberParseException as exc:
        raise InvalidContact(f"{value!r} is neither a phone number nor an e-mail address ({exc})") from None
    if not phonenumbers.is_possible_number(number):
        raise InvalidContact(f"{value!r} is not a possible phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def mail_address(value: str) -> str:
    """An e-mail address as SMTP sends it: checked as `normalize_contact` checks it, the domain in ASCII
    (IDNA) so that a server without SMTPUTF8 takes it, the local part as given (a mailbox may heed its case).

    Raises:
        InvalidContact: `value` is no e-mail address.
    """
    address = _address(value, _visible(value))
    return f"{address.local_part}@{address.ascii_domain}"


def _visible(value: str) -> str:
    return "".join(c for c in value if unicodedata.category(c) != "Cf").strip()


def _address(value: str, text: str) -> email_validator.ValidatedEmail:
    try:
        return email_validator.validate_email(text, check_deliverability=False)
    except email_validator.EmailNotValidError as exc:
        raise InvalidContact(f"{value!r} is not an e-mail address ({exc})") from None


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
