"""Contact normalization: a flow's recorded contacts and a reply's sender must come out the same."""

from __future__ import annotations

import re
import uuid

from temporalio import workflow

# The workflow below runs in the sandbox, which re-imports this module: everything else is passed through.
with workflow.unsafe.imports_passed_through():
    import idna
    import phonenumbers
    import pytest
    from hypothesis import given
    from hypothesis import strategies as st
    from temporalio.testing import WorkflowEnvironment
    from temporalio.worker import Worker

    from scheduler.errors import InvalidContact
    from scheduler.flow.attributes import CUSTOMER_CONTACT
    from scheduler.flow.contacts import customer_contacts, normalize_contact, redact
    from scheduler.flow.definition import WorkflowDefinition
    from scheduler.flow.engine import start_attributes
    from scheduler.flow.models import FlowInput


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("+1 (212) 555-0123", "+12125550123"),
        ("+12125550123", "+12125550123"),
        ("(212) 555-0123", "+12125550123"),
        ("212.555.0123", "+12125550123"),
        ("1 212 555 0123", "+12125550123"),
        ("tel:+1-212-555-0123", "+12125550123"),
        ("whatsapp:+12125550123", "+12125550123"),
        ("+44 20 7946 0958", "+442079460958"),
        ("  Ann@Example.COM ", "ann@example.com"),
        ("mailto:Ann@Example.com", "ann@example.com"),
        ("O'Brien@example.co.uk", "o'brien@example.co.uk"),
    ],
    ids=[
        "us-formatted",
        "e164",
        "us-national",
        "dots",
        "with-trunk-1",
        "tel-uri",
        "whatsapp",
        "uk",
        "email-case-spaces",
        "mailto",
        "email-apostrophe",
    ],
)
def test_normalize_contact_gives_one_form(raw: str, normal: str) -> None:
    assert normalize_contact(raw) == normal


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "hello",
        "12",
        "+1 212",
        "ann@",
        "@example.com",
        "ann@example",
        'a"b@example.com',
        "a\\b@example.com",
        "a b@x.com",
    ],
    ids=["empty", "word", "too-short", "incomplete", "no-domain", "no-local", "no-tld", "dquote", "backslash", "space"],
)
def test_normalize_contact_rejects_what_is_neither(raw: str) -> None:
    with pytest.raises(InvalidContact, match=f"^{re.escape(repr(raw))}"):
        normalize_contact(raw)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("ann\x00@example.com", "'ann\\x00@example.com' contains a control character (U+0000)"),
        ("+1 212 555\x000123", "'+1 212 555\\x000123' contains a control character (U+0000)"),
        ("a" * 300 + "@example.com", "'" + "a" * 40 + "…' is longer than 255 bytes (UTF-8)"),
    ],
    ids=["nul-email", "nul-phone", "long-email"],
)
def test_normalize_contact_rejects_what_no_search_attribute_may_hold(raw: str, problem: str) -> None:
    """A NUL would reach `CustomerContact` and the visibility queries that look a reply's sender up."""
    with pytest.raises(InvalidContact) as raised:
        normalize_contact(raw)
    assert str(raised.value) == problem


@given(area=st.integers(201, 989), exchange=st.integers(200, 999), line=st.integers(0, 9999))
def test_normalize_contact_every_spelling_of_a_number_is_one_contact(area: int, exchange: int, line: int) -> None:
    """However a number is written (national, international, E.164, RFC 3966), it is one contact."""
    number = phonenumbers.parse(f"+1{area:03d}{exchange:03d}{line:04d}")
    formats = [
        phonenumbers.PhoneNumberFormat.NATIONAL,
        phonenumbers.PhoneNumberFormat.INTERNATIONAL,
        phonenumbers.PhoneNumberFormat.E164,
        phonenumbers.PhoneNumberFormat.RFC3966,
    ]
    spellings = {normalize_contact(phonenumbers.format_number(number, f)) for f in formats}
    assert spellings == {f"+1{area:03d}{exchange:03d}{line:04d}"}
    assert normalize_contact(spellings.pop()) == f"+1{area:03d}{exchange:03d}{line:04d}"


def test_customer_contacts_keeps_valid_ones_in_order_without_duplicates() -> None:
    customer = {"phone": "+1 (212) 555-0123", "email": "Ann@Example.com", "name": "Ann"}
    assert customer_contacts(customer) == ["+12125550123", "ann@example.com"]
    assert customer_contacts({"phone": "call me", "email": "ann@example.com"}) == ["ann@example.com"]
    assert customer_contacts({"phone": 2125550123, "email": ""}) == []
    assert customer_contacts({}) == []


def test_start_attributes_record_normalized_contacts(seed_definition: WorkflowDefinition) -> None:
    """A flow is findable by its customer's phone and e-mail as replies will spell them."""
    flow = FlowInput(
        definition=seed_definition, customer={"id": "c1", "phone": "(212) 555-0123", "email": "Ann@Example.com"}
    )
    assert start_attributes(flow).get(CUSTOMER_CONTACT) == ["+12125550123", "ann@example.com"]
    assert CUSTOMER_CONTACT not in start_attributes(FlowInput(definition=seed_definition, customer={"id": "c2"}))


@workflow.defn(name="ContactsProbe")
class ContactsProbe:
    """Calls `start_attributes` from workflow code, as `CampaignRunWorkflow` does."""

    @workflow.run
    async def run(self, flow: FlowInput) -> list[str]:
        return list(start_attributes(flow).get(CUSTOMER_CONTACT) or [])


async def test_start_attributes_in_workflow_sandbox_normalize_phones(
    ts_env: WorkflowEnvironment, seed_definition: WorkflowDefinition, task_queue: str
) -> None:
    """phonenumbers imports a region's metadata on first use; in the sandbox that import must be passed through.

    Fiji and Iceland: regions no other test parses, so their metadata is first loaded inside the sandbox.
    """
    flows = [
        FlowInput(definition=seed_definition, customer={"phone": "+679 321 2345"}),
        FlowInput(definition=seed_definition, customer={"phone": "+354 551 2345", "email": "Bo@Example.is"}),
        FlowInput(definition=seed_definition, customer={"email": "Bo\u200b@Bücher.de"}),
    ]
    async with Worker(
        ts_env.client, task_queue=task_queue, workflows=[ContactsProbe], workflow_failure_exception_types=[Exception]
    ):
        results = [
            await ts_env.client.execute_workflow(
                ContactsProbe.run, f, id=f"probe-{uuid.uuid4()}", task_queue=task_queue
            )
            for f in flows
        ]
    assert results == [["+6793212345"], ["+3545512345", "bo@example.is"], ["bo@xn--bcher-kva.de"]]


@pytest.mark.parametrize(
    ("contact", "shown"),
    [("+12125550123", "+12*******23"), ("ann@example.com", "a***@example.com"), ("+1234", "*****")],
    ids=["phone", "email", "short"],
)
def test_redact_hides_the_reachable_part(contact: str, shown: str) -> None:
    assert redact(contact) == shown


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("Ann@Bücher.de", "ann@xn--bcher-kva.de"),
        ("ANN@BÜCHER.DE", "ann@xn--bcher-kva.de"),
        ("ann@XN--BCHER-KVA.DE", "ann@xn--bcher-kva.de"),
        ("a\u200bnn@example.com", "ann@example.com"),
        ("\u200fann@example.com\u200e", "ann@example.com"),
        ("ann@exam\u00adple.com", "ann@example.com"),
        ("\ufeffAnn@Example.com", "ann@example.com"),
        ("+1 212\u200b555 0123", "+12125550123"),
        ("\u200f+1 (212) 555-0123", "+12125550123"),
        ("Jörg@Example.com", "jörg@example.com"),
        ("用户@例子.广告", "用户@xn--fsqu00a.xn--4rr70v"),
    ],
    ids=[
        "idn-domain",
        "idn-upper",
        "punycode-upper",
        "zero-width-space",
        "rtl-ltr-marks",
        "soft-hyphen",
        "byte-order-mark",
        "phone-zero-width-space",
        "phone-rtl-mark",
        "unicode-local-part",
        "unicode-everywhere",
    ],
)
def test_normalize_contact_gives_one_spelling_of_an_address(raw: str, normal: str) -> None:
    """The domain in ASCII (IDNA, as SMTP sends it), lower case; invisible format characters (Cf) dropped."""
    assert normalize_contact(raw) == normal


@pytest.mark.parametrize(
    "raw",
    ["ann@bücher", "a..b@example.com", "ann.@example.com", "ann@-x-.com", "ann@xn--zz.de", "\u200b", "ann@\u200b.com"],
    ids=["idn-no-tld", "double-dot", "trailing-dot", "hyphens", "bad-punycode", "only-invisible", "empty-label"],
)
def test_normalize_contact_rejects_an_address_invalid_once_normalized(raw: str) -> None:
    with pytest.raises(InvalidContact, match=f"^{re.escape(repr(raw))}"):
        normalize_contact(raw)


_LETTERS = "abcdefghijklmnopqrstuvwxyzäöüéñçøåłžš0123456789"
_INVISIBLE = ["\u200b", "\u200c", "\u200e", "\u200f", "\u00ad", "\u2060", "\ufeff"]
# Building these strategies imports more of hypothesis, which the sandbox's copy of this module must not do itself.
with workflow.unsafe.imports_passed_through():
    _LOCAL_PARTS = st.lists(st.text(_LETTERS, min_size=1, max_size=8), min_size=1, max_size=3).map(".".join)
    _LABELS = st.lists(st.text(_LETTERS, min_size=1, max_size=12), min_size=1, max_size=3)
    _TLDS = st.sampled_from(["de", "com", "org", "nl"])
    _INSERTS = st.lists(st.tuples(st.integers(0, 200), st.sampled_from(_INVISIBLE)), max_size=4)


@given(local=_LOCAL_PARTS, labels=_LABELS, tld=_TLDS, invisible=_INSERTS)
def test_normalize_contact_is_idempotent_and_spellings_of_an_address_collapse(
    local: str, labels: list[str], tld: str, invisible: list[tuple[int, str]]
) -> None:
    """Case, the IDN or punycode form of the domain and invisible characters anywhere are one contact."""
    domain = ".".join([*labels, tld])
    address = f"{local}@{domain}"
    with_invisible = address
    for at, char in invisible:
        at %= len(with_invisible) + 1
        with_invisible = with_invisible[:at] + char + with_invisible[at:]
    spellings = [
        address,
        address.upper(),
        address.title(),
        f"{local}@{idna.encode(domain).decode('ascii')}",
        f"{local.upper()}@{idna.encode(domain).decode('ascii').upper()}",
        with_invisible,
    ]
    normal = normalize_contact(address)
    assert {normalize_contact(s) for s in spellings} == {normal}
    assert normalize_contact(normal) == normal
    assert normal.split("@")[1].isascii()
