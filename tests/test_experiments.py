"""An experiment's results end to end on the dev server: a campaign with a split and a holdout runs over an
audience, purchases are posted for chosen customers, and `GET /campaigns/{id}/experiments` (and `scheduler
experiments`) count exactly what was posted, per variant."""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx

from scheduler.api import create_app
from scheduler.flow.nodes.split import assign_variant
from scheduler.visibility import campaign_query
from scheduler.worker import make_worker
from tests.helpers.campaigns import JSONL_AUDIENCE, SPLIT
from tests.helpers.cli import scheduler, write_config
from tests.helpers.schedules import Campaigns
from tests.helpers.signing import WEBHOOK_SECRET, signed_headers
from tests.helpers.waiting import eventually

CARTS = 200
EXPERIMENT = "copy-2031-01"
WEIGHTS = {"friendly": 45, "discount": 45, "holdout": 10}


async def test_experiment_results_count_what_was_posted_per_variant(campaigns: Campaigns) -> None:
    c = campaigns
    c.settings.webhooks.secret = WEBHOOK_SECRET
    c.settings.webhooks.route_timeout = timedelta(milliseconds=200)
    # Carts of this test only: a purchase reaches every running flow of its cart on the shared dev server.
    carts = [f"{c.prefix}-k{i}" for i in range(CARTS)]
    rows = [{"cart_ref": cart, "mobile": f"+1 212 555 {i:04d}", "name": f"N{i}"} for i, cart in enumerate(carts)]
    (c.dir / "carts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    c.path("x").write_text(_with_window(JSONL_AUDIENCE + SPLIT, c.id("x"), "3m"), encoding="utf-8")
    c.owned.add(c.sid("x"))
    await c.sync()
    variant_of = {r["cart_ref"]: assign_variant(c.id("x"), EXPERIMENT, f"cart:{r['cart_ref']}", WEIGHTS) for r in rows}
    entered = Counter(variant_of.values())
    app = create_app(c.settings, client=c.client)
    async with (
        make_worker(c.client, c.settings),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as http,
    ):
        started = datetime.now(UTC)
        run = await c.run("x", 0)
        assert run["started"] == CARTS

        async def all_ended() -> None:
            closed = f"{campaign_query(c.id('x'))} AND ExecutionStatus != 'Running'"
            assert (await c.client.count_workflows(closed)).count == CARTS

        await eventually(all_ended, timeout=120)

        # Per variant: its first 5 carts buy (after their flow ended, within 3m of its start); the 6th buys after
        # the window,
        # the 7th before its flow started; the 1st's purchase is redelivered. Amounts: 10 EUR each.
        later = datetime.now(UTC) + timedelta(minutes=4, seconds=30)  # over 3m after every flow started
        posted: dict[str, list[dict[str, Any]]] = {v: [] for v in WEIGHTS}
        for cart in carts:
            bodies = posted[variant_of[cart]]
            if len(bodies) < 5:
                bodies.append({"cart_id": cart, "conversion_id": f"o-{cart}", "amount": "10", "currency": "EUR"})
            elif len(bodies) == 5:
                bodies.append({"cart_id": cart, "conversion_id": f"o-{cart}", "occurred_at": later.isoformat()})
            elif len(bodies) == 6:
                before = (started - timedelta(minutes=10)).isoformat()
                bodies.append({"cart_id": cart, "conversion_id": f"o-{cart}", "occurred_at": before})
        for variant, bodies in posted.items():
            for body in [*bodies, bodies[0]]:
                response = await _convert(http, body)
                assert response.status_code == 404, response.text  # every flow has ended: recorded all the same
                assert "recorded" in response.json()["detail"], variant

        response = await http.get(f"/campaigns/{c.id('x')}/experiments")
        assert response.status_code == 200, response.text
        report = response.json()
        (experiment,) = report["experiments"]
        by_name = {v["name"]: v for v in experiment["variants"]}
        assert list(by_name) == list(WEIGHTS)
        for name, v in by_name.items():
            assert (v["entered"], v["converted"], v["conversions"]) == (entered[name], 5, 5), name
            assert v["messaged"] == (0 if name == "holdout" else entered[name])
            assert v["answered"] == 0
            assert v["holdout"] is (name == "holdout")
            assert Decimal(v["revenue"]["EUR"]) == 50
            assert v["conversion_rate"] == 5 / entered[name]
        verdict = experiment["verdict"]
        assert verdict["control"] == "holdout"
        assert [comparison["variant"] for comparison in verdict["comparisons"]] == ["friendly", "discount"]
        assert all(comparison["decision"] == "undecided" for comparison in verdict["comparisons"])
        assert verdict["warning"] is None  # 200 carts assigned by the weights: no sample ratio mismatch

        outcomes = (await http.get(f"/campaigns/{c.id('x')}/stats")).json()["outcomes"]
        assert (outcomes["held_out"], outcomes["completed"]) == (entered["holdout"], CARTS - entered["holdout"])

        page = await http.get(f"/ui/campaigns/{c.id('x')}")
        assert page.status_code == 200, page.text
        shown = {
            name: [int(n) for n in re.findall(r'<td class="n">(\d+)</td>', row)]
            for name, row in re.findall(r'<tr data-variant="([a-z]+)">(.*?)</tr>', page.text, re.S)
        }
        assert shown == {n: [WEIGHTS[n], v["entered"], v["messaged"], 0, 5] for n, v in by_name.items()}
        assert page.text.count('<li data-decision="undecided">not enough data yet') == 2

    config = write_config(
        c.dir.parent / "scheduler.toml",
        address=c.client.service_client.config.target_host,
        task_queue=c.settings.temporal.task_queue,
    )
    with config.open("a", encoding="utf-8") as f:
        f.write(f'\n[store]\nurl = "{c.settings.store_url}"\n')
    table = await scheduler("experiments", c.id("x"), "--config", config)
    assert table.code == 0, table
    assert f"experiment {EXPERIMENT} (step copy_test)" in table.stdout
    holdout_row = next(line.split() for line in table.stdout.splitlines() if line.startswith("holdout (holdout)"))
    assert holdout_row[2:8] == ["10", str(entered["holdout"]), "0", "0", "5", f"{500 / entered['holdout']:.1f}"]
    as_json = await scheduler("experiments", c.id("x"), "--json", "--config", config)
    assert json.loads(as_json.stdout)["experiments"][0]["variants"] == experiment["variants"]


async def test_experiments_of_an_unknown_campaign_is_a_404(campaigns: Campaigns) -> None:
    app = create_app(campaigns.settings, client=campaigns.client)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as http:
        response = await http.get(f"/campaigns/nope-{uuid.uuid4().hex[:6]}/experiments")
    assert response.status_code == 404
    assert "no schedule or flow of campaign" in response.json()["detail"]


def _with_window(body: str, campaign_id: str, window: str) -> str:
    head = f'[campaign]\nid = "{campaign_id}"\nattribution_window = "{window}"\n\n[schedule]\ncron = ["0 9 * * *"]\n\n'
    return head + body


async def _convert(http: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    content = json.dumps(body).encode()
    headers = {"content-type": "application/json"} | signed_headers(content, msg_id=f"msg_{uuid.uuid4().hex}")
    return await http.post("/webhooks/conversions", content=content, headers=headers)
