"""Delivery receipts: receipts/s through `POST /webhooks/delivery` against replies/s through `POST /webhooks/replies`.

Why: a receipt is the same kind of request as a reply (a small Standard Webhooks signed JSON body that ends in
one signal to a running flow), plus the deliveries store's conditional UPDATE (the furthest state kept) and the
read of the message's row that names its flow. This measures how much of the reply webhook's rate the receipt
webhook keeps (target: ratio ≥ 0.9). Both go through one real uvicorn server on 127.0.0.1 (`create_app`, SQLite
store, this process's Temporal client), posted by a sender process over keep-alive HTTP/1.1 connections
(`bench/webhooks.py`'s h11 client), 32 in flight, to waiting flows of a single `wait_answer` step, in ABBA
order over the rounds, on the same dev server and worker. A reply ends its flow; a receipt reaches a flow
that keeps waiting (it is terminated afterwards, outside the measured time). Each receipt's message is
recorded beforehand as sent (`Deliveries.begin` + `sent`, as the worker does when it sends).

Correctness: every reply is answered 202 naming its flow and ends it with one reply; every receipt is answered
200 `changed: true`, and the store then holds `delivered` for each message.

Run: `.venv/bin/python bench/receipts.py` (no arguments). The last line printed is one JSON object.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))  # the project root, for `tests.helpers`
sys.path.insert(0, str(Path(__file__).parent))  # this directory, for the webhook benchmark's parts

import asyncio
import base64
import contextlib
import json
import os
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from typing import Any

import webhooks as parts  # bench/webhooks.py: processes, the h11 sender, the uvicorn server
from temporalio.client import Client

from scheduler.config import load_settings
from scheduler.flow.signals import DeliveryState
from scheduler.store import Store
from scheduler.store.deliveries import Deliveries, DeliveryRecord
from tests.helpers.servers import local_environment

ROUNDS = 4
PER_PHASE = 300
WARMUP = 40
CONCURRENCY = parts.CONCURRENCY
KINDS = ("receipts", "replies")
PATHS = {"receipts": "/webhooks/delivery", "replies": "/webhooks/replies"}


def sender_main(url: str, conn: Connection) -> None:
    """The sender process: post each batch `(path, requests)` it is sent, answer (seconds, latencies, answers)."""
    asyncio.run(_send(url, conn))


async def _send(url: str, conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    with contextlib.suppress(EOFError):
        while (batch := await loop.run_in_executor(None, conn.recv)) is not None:
            # New connections per batch: uvicorn closes idle keep-alive connections after 5 s.
            connections = [await parts.HttpConnection.open(url) for _ in range(CONCURRENCY)]
            try:
                conn.send(await _send_batch(connections, *batch))
            finally:
                for connection in connections:
                    connection.close()


async def _send_batch(
    connections: list[parts.HttpConnection], path: str, requests: list[parts.SignedRequest]
) -> tuple[float, list[float], list[tuple[int, bytes]]]:
    answers: list[tuple[int, bytes]] = [(0, b"")] * len(requests)

    async def post(slot: int, index: int) -> None:
        body, headers = requests[index]
        answers[index] = await connections[slot].post(path, body, headers)

    start = time.perf_counter()
    latencies = await parts.each(list(range(len(requests))), post, CONCURRENCY)
    return time.perf_counter() - start, latencies, answers


class Bench(parts.Bench):
    def __init__(self, client: Client, task_queue: str, secret: str, sender: parts.Child, store: Store) -> None:
        super().__init__(client, task_queue, secret, sender, {})
        self.deliveries = Deliveries(store)

    def sign(self, body: dict[str, Any]) -> parts.SignedRequest:
        content = json.dumps(body).encode()
        msg_id, now = f"msg_{uuid.uuid4().hex}", datetime.now(UTC)
        return content, {
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self.webhook.sign(msg_id=msg_id, timestamp=now, data=content.decode()),
        }

    async def post(self, kind: str, requests: list[parts.SignedRequest]) -> tuple[float, list[float], list[Any]]:
        self.sender.conn.send((PATHS[kind], requests))
        return await self.sender.receive()  # type: ignore[no-any-return]

    async def run_phase(self, kind: str, n: int, label: str) -> tuple[float, list[float]]:
        """Start `n` waiting flows, post one reply or receipt to each (measured), check every answer and effect."""
        ids = await self.start_flows(n, label)
        if kind == "replies":
            requests = [self.sign({"workflow_id": w, "text": "Yes please"}) for w in ids]
            seconds, latencies, answers = await self.post(kind, requests)
            expected = [(202, {"signaled": [w]}) for w in ids]
            wrong = [a for a, e in zip(answers, expected, strict=True) if (a[0], json.loads(a[1])) != e]
            if wrong:
                raise SystemExit(f"{len(wrong)} replies not accepted, e.g. {wrong[:3]}")
            await self.wait_ended(ids)
            return seconds, latencies
        message_ids = await asyncio.to_thread(self.record_sent, ids)
        requests = [self.sign({"message_id": m, "status": "delivered", "provider_id": f"gw-{m}"}) for m in message_ids]
        seconds, latencies, answers = await self.post(kind, requests)
        wrong = [a for a in answers if a[0] != 200 or not json.loads(a[1])["changed"]]
        if wrong:
            raise SystemExit(f"{len(wrong)} receipts not taken, e.g. {wrong[:3]}")
        stored = await asyncio.to_thread(lambda: [self.deliveries.get(m) for m in message_ids])
        if any(r is None or r.status != DeliveryState.DELIVERED for r in stored):
            raise SystemExit("a receipt's message is not delivered in the store")

        async def end(_: int, workflow_id: str) -> None:
            await self.client.get_workflow_handle(workflow_id).terminate("bench done")

        await parts.each(ids, end, parts.SETUP_CONCURRENCY)
        return seconds, latencies

    def record_sent(self, ids: list[str]) -> list[str]:
        message_ids = []
        for workflow_id in ids:
            message_id = str(uuid.uuid4())
            record = DeliveryRecord(message_id, workflow_id, "", "bench", "text", "http", "+15550001")
            self.deliveries.begin(record)
            self.deliveries.sent(message_id, provider_id=None, at=datetime.now(UTC))
            message_ids.append(message_id)
        return message_ids


async def bench(workdir: Path) -> dict[str, list[float]]:
    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    settings = load_settings()
    settings.channels.outbox = workdir / "outbox.jsonl"
    settings.store.url = f"sqlite:///{workdir / 'scheduler.db'}"
    settings.webhooks.secret = secret
    settings.temporal.task_queue = f"bench-receipts-{uuid.uuid4()}"
    env = await local_environment()
    rates: dict[str, list[float]] = {k: [] for k in KINDS}
    store = Store.open(settings.store_url)
    try:
        client = env.client
        target = client.service_client.config.target_host
        async with contextlib.AsyncExitStack() as stack:
            args = (target, client.namespace, settings.temporal.task_queue, str(settings.channels.outbox))
            worker = parts.Child("worker", parts.worker_main, *args)
            stack.callback(worker.stop)
            if await worker.receive() != "ready":
                raise SystemExit("the worker did not start")
            url = await stack.enter_async_context(parts.serve(settings, client))
            sender = parts.Child("sender", sender_main, url)
            stack.callback(sender.stop)
            b = Bench(client, settings.temporal.task_queue, secret, sender, store)
            for kind in KINDS:
                await b.run_phase(kind, WARMUP, f"warmup-{kind}")
            print(f"API at {url}; {ROUNDS} rounds of {PER_PHASE} requests each way, {CONCURRENCY} in flight:")
            for round_no in range(ROUNDS):
                for kind in KINDS if round_no % 2 == 0 else KINDS[::-1]:
                    seconds, latencies = await b.run_phase(kind, PER_PHASE, f"{kind}-{round_no}")
                    rates[kind].append(len(latencies) / seconds)
                    p50 = parts.percentile(latencies, 0.5) * 1000
                    print(f"  round {round_no + 1} {kind:<8} {rates[kind][-1]:7.1f} requests/s  p50 {p50:6.1f} ms")
    finally:
        store.close()
        await env.shutdown()
    return rates


def main() -> None:
    started = time.perf_counter()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="scheduler-bench-") as tmp:
        rates = asyncio.run(bench(Path(tmp)))
    median = {k: statistics.median(v) for k, v in rates.items()}
    ratio = median["receipts"] / median["replies"]
    print(f"medians of {ROUNDS} rounds: receipts {median['receipts']:.1f}/s, replies {median['replies']:.1f}/s")
    print(f"  load average {load:.1f} before, {os.getloadavg()[0]:.1f} after")
    print(f"  ratio receipts/replies: {ratio:.3f}  (target >= 0.9; total {time.perf_counter() - started:.0f}s)")
    result = {
        "name": "delivery_receipts_per_second",
        "value": round(median["receipts"], 2),
        "unit": "receipts/s",
        "baseline": round(median["replies"], 2),
        "ratio": round(ratio, 4),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
