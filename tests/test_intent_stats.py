"""Seeing the conversation, end to end on the dev server: a campaign whose `wait_answer` has intents, replies
as customers type them, then the campaign's stats count flows per intent taken and its dashboard page lists
the answers no intent matched (escaped, the contact masked, a link to the flow)."""

from __future__ import annotations

from typing import Any

from markupsafe import escape

from scheduler.flow.attributes import NO_INTENT, REPLY_INTENT
from tests.helpers import ROOT
from tests.helpers.api import running_api
from tests.helpers.schedules import Campaigns
from tests.helpers.waiting import eventually

EXAMPLE = (ROOT / "campaigns" / "sms_reply_intents.toml").read_text(encoding="utf-8")
WORKFLOW = EXAMPLE[EXAMPLE.index("[workflow]") :]
"""The shipped intents example's flow: YES → the link, LATER → a day's wait, anything else → the owner."""
ANSWERS = {
    "+12125550181": ("Yes please!", "yes"),
    "+12125550182": ("not now", "later"),
    "+12125550183": ("Is the blue one in stock?", NO_INTENT),
    "+12125550184": ("<script>alert('hi')</script>", NO_INTENT),
    "+12125550185": ("yesterday I looked", NO_INTENT),  # "yes" only as a whole word
}


async def test_stats_count_flows_per_intent_and_the_dashboard_lists_unmatched_answers(campaigns: Campaigns) -> None:
    c = campaigns
    c.settings.temporal.ui_url = "http://temporal-ui.example:8233"
    c.write("talk", workflow=WORKFLOW)
    await c.sync()
    async with running_api(c.client, c.settings, c.settings.temporal.task_queue) as api:
        flows: dict[str, str] = {}
        for i, phone in enumerate(ANSWERS):
            started = await api.start(
                campaign=c.id("talk"),
                customer={"id": f"{c.prefix}-c{i}", "name": "Ann", "phone": phone},
                cart={"id": f"{c.prefix}-k{i}"},
            )
            assert started.status_code == 200, started.text
            flows[phone] = started.json()["workflow_id"]
        for phone, (text, _) in ANSWERS.items():
            answered = await api.signal(flows[phone], text=text)
            assert answered.status_code == 200, answered.text

        async def intents_visible() -> dict[str, Any]:
            for phone, (_, intent) in ANSWERS.items():
                description = await c.client.get_workflow_handle(flows[phone]).describe()
                assert description.typed_search_attributes.get(REPLY_INTENT) == intent, phone
            response = await api.http.get(f"/campaigns/{c.id('talk')}/stats")
            assert response.status_code == 200, response.text
            stats = response.json()
            assert stats["intents"] == {"yes": 1, "later": 1, NO_INTENT: 3}
            return stats

        await eventually(intents_visible, timeout=30)

        page = await api.http.get(f"/ui/campaigns/{c.id('talk')}")
        assert page.status_code == 200, page.text
        assert '<tr data-intent="yes"><td>yes</td><td class="n">1</td></tr>' in page.text
        rows = page.text[page.text.index('<table id="unmatched">') :]
        rows = rows[: rows.index("</table>")]
        for phone, (text, intent) in ANSWERS.items():
            shown = f'<td class="reply">{escape(text)}</td>' in rows
            assert shown is (intent == NO_INTENT), (phone, text)
        assert "<script>alert" not in page.text
        assert "+1212555018" not in rows and "+12*******84" in rows  # masked, as logs show contacts
        link = f"http://temporal-ui.example:8233/namespaces/default/workflows/{flows['+12125550184']}"
        assert f'<a href="{link}" target="_blank">' in rows
