"""Webhook replies: replies/s through `POST /webhooks/replies` against a plain loop of `handle.signal`.

Why: a reply that names its flow (`workflow_id`) costs Temporal one signal, whichever way it comes. Through
the webhook it also pays for HTTP (uvicorn, FastAPI routing and dependencies), the size-checked body read,
the Standard Webhooks signature check, request validation and the response. This measures how much of the
SDK's signal throughput the endpoint keeps: the same number of waiting `AbandonedCartWorkflow` flows get
one reply each, either through a real uvicorn server on 127.0.0.1 (`create_app` with a `whsec_` secret,
sharing this process's Temporal client) or straight from the SDK (`handle.signal("client-answered",
Reply(...))` from this process), with the same number of replies in flight, on the same dev server and
worker, in ABBA order over the rounds. Each phase has its own flows: a reply ends its flow (the
definition is a single `wait_answer` step).

Three processes besides the dev server, all started and stopped here: this one (the API, or the SDK
loop), the worker, and the provider posting the webhooks (one keep-alive HTTP/1.1 connection per reply in
flight, requests signed beforehand with the reference `standardwebhooks` package). Run in this process, the
worker's workflow tasks and the sender would compete for its event loop with the path being measured.

Correctness: every request answered 202 naming its flow, every flow ended with exactly one reply (its
result), and a sample answers the `status` query with one reply. CPU per reply is counted per process
from the first reply until the flows ended (Linux /proc), which also holds when other jobs share the
machine and the throughput figures drift. On a machine with few cores all of them are busy while the
replies go in (the output says how many), so whatever CPU a path adds per reply, the sender's included,
costs it throughput.

Run: `.venv/bin/python bench/webhooks.py` (no arguments). The last line printed is one JSON object.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))  # the project root, for `tests.helpers`

import asyncio
import base64
import contextlib
import json
import multiprocessing
import os
import random
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from typing import Any, TypeVar
from urllib.parse import urlsplit

import h11
import uvicorn
from standardwebhooks import Webhook
from temporalio.client import Client, WorkflowHandle

from scheduler.api import create_app
from scheduler.config import Settings, load_settings
from scheduler.flow.definition import WorkflowDefinition, validate_definition
from scheduler.flow.engine import start_attributes
from scheduler.flow.models import FlowInput, FlowStatus
from scheduler.flow.signals import CLIENT_ANSWERED_SIGNAL, Reply
from scheduler.flow.workflows import STATUS_QUERY, AbandonedCartWorkflow
from scheduler.temporal import connect
from scheduler.worker import make_worker
from tests.helpers.servers import local_environment

ROUNDS = 4
"""Rounds of (webhook, sdk), in ABBA order: webhook first in even rounds, sdk first in odd ones."""
FLOWS_PER_PHASE = 400
"""Waiting flows, and so replies, per measured phase."""
WARMUP_FLOWS = 40
CONCURRENCY = 32
"""Replies in flight at once, both ways."""
SETUP_CONCURRENCY = 50
"""Flows started, queried and awaited at once outside the measured replies."""
STATUS_SAMPLE = 10
"""Flows per phase whose `status` query is checked (a query of an ended flow replays its history)."""
PHASE_TIMEOUT = 120.0
"""Bound on every phase, measured or not, and on starting and stopping the processes."""
FLOW_TIMEOUT = timedelta(minutes=10)
"""Execution timeout of every flow, so nothing outlives a failed run."""
KINDS = ("webhook", "sdk")
COUNTED_RPCS = (
    "signal_workflow_execution",
    "describe_workflow_execution",
    "list_workflow_executions",
    "get_workflow_execution_history",
)
"""What a reply may cost Temporal: a signal, and a describe or list when it is not routed by workflow id."""
PATH = "/webhooks/replies"

# One step that waits for the reply (long enough never to time out here) and ends the flow.
DEFINITION: dict[str, Any] = {
    "start_step": "wait",
    "steps": {"wait": {"node": "wait_answer", "params": {"timeout": "1h"}}},
}
T = TypeVar("T")
SignedRequest = tuple[bytes, dict[str, str]]
"""Body and headers of one webhook request."""
Sent = tuple[float, list[float], list[tuple[int, bytes]]]
"""What the sender answers for a batch: wall seconds, each request's seconds, each (status, body)."""


@dataclass
class Phase:
    """One measured phase: wall seconds of the replies, each reply's latency, CPU ms per reply by process."""

    kind: str
    seconds: float
    latencies: list[float]
    cpu_ms: dict[str, float] = field(default_factory=dict)
    """From the first reply until every flow of the phase ended: "api" (this process: the API or the
    SDK loop), "worker", "sender", "dev server" (those /proc shows)."""
    rpcs: Counter[str] = field(default_factory=Counter)
    """Calls this process's client made while replying, by method (`COUNTED_RPCS`)."""
    busy_cores: float | None = None
    """How many of the machine's cores were busy while replying (any process, this benchmark's or not)."""
    ended_seconds: float = 0.0
    """From the first reply until every flow ended (the worker and dev server catching up included)."""

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds


def percentile(values: list[float], q: float) -> float:
    """The `q`-quantile (0..1) of `values`, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


async def bounded(awaitable: Awaitable[T]) -> T:
    return await asyncio.wait_for(awaitable, timeout=PHASE_TIMEOUT)


async def each(items: list[T], call: Callable[[int, T], Awaitable[Any]], concurrency: int) -> list[float]:
    """Run `call(slot, item)` on every item, `concurrency` at a time; each call's seconds.

    Workers 0 .. concurrency - 1 (the `slot`) pull items from one iterator.
    """
    pending: Iterator[T] = iter(items)
    latencies: list[float] = []

    async def worker(slot: int) -> None:
        for item in pending:
            start = time.perf_counter()
            await call(slot, item)
            latencies.append(time.perf_counter() - start)

    await bounded(asyncio.gather(*(worker(slot) for slot in range(concurrency))))
    return latencies


class RpcCounter:
    """Calls of some WorkflowService methods, by wrapping the client's service (as bench/schedules.py does)."""

    def __init__(self, client: Client, names: Iterable[str]) -> None:
        self.calls: Counter[str] = Counter()
        service = client.workflow_service
        for name in names:
            setattr(service, name, self._counted(name, getattr(service, name)))

    def _counted(self, name: str, call: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return await call(*args, **kwargs)

        return counted


def process_cpu(pid: int | None) -> float | None:
    """CPU seconds (user + system) process `pid` used so far, from Linux's /proc; None if unknown."""
    fields = _proc_stat(pid) if pid else None
    return (int(fields[12]) + int(fields[13])) / os.sysconf("SC_CLK_TCK") if fields else None


def busy_jiffies() -> tuple[int, int] | None:
    """The machine's (busy, total) CPU time so far, from /proc/stat; None elsewhere."""
    try:
        line = Path("/proc/stat").read_text().splitlines()[0]
    except OSError:
        return None
    ticks = [int(x) for x in line.split()[1:]]
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)  # not idle, iowait


def child_pid(name: str) -> int | None:
    """A child process of this one by name (`comm`), from /proc; None if not found."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        fields = _proc_stat(int(stat.parent.name))
        if fields and fields[0] == name and int(fields[2]) == os.getpid():
            return int(stat.parent.name)
    return None


def _proc_stat(pid: int) -> list[str] | None:
    """`comm`, then the fields after it (state, ppid, ..., utime at 12, stime at 13); None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    end = text.rfind(")")
    return [text[text.find("(") + 1 : end], *text[end + 2 :].split()]


# The other processes: spawned (they inherit no state), spoken to over a pipe, stopped by sending None.


class Child:
    """A process running `main(*args, conn)`, daemonic, so it cannot outlive the benchmark."""

    def __init__(self, name: str, main: Callable[..., None], *args: Any) -> None:
        self.name = name
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=main, args=(*args, child), name=name, daemon=True)
        self.process.start()
        child.close()

    async def receive(self) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, self._receive)

    def _receive(self) -> Any:
        if not self.conn.poll(PHASE_TIMEOUT):
            raise SystemExit(f"the {self.name} did not answer in time")
        return self.conn.recv()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.process.join(PHASE_TIMEOUT)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
        self.conn.close()


def worker_main(target_host: str, namespace: str, task_queue: str, outbox: str, conn: Connection) -> None:
    """The worker process: `make_worker` on `task_queue`; says "ready" once polling, stops on any message."""
    asyncio.run(_run_worker(target_host, namespace, task_queue, outbox, conn))


async def _run_worker(target_host: str, namespace: str, task_queue: str, outbox: str, conn: Connection) -> None:
    settings = load_settings()
    settings.channels.outbox = Path(outbox)
    settings.store.url = f"sqlite:///{Path(outbox).parent / 'scheduler.db'}"  # not the dev data's
    settings.temporal.address, settings.temporal.namespace = target_host, namespace
    client = await connect(settings)
    async with make_worker(client, settings, task_queue=task_queue):
        conn.send("ready")
        with contextlib.suppress(EOFError):
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)


def sender_main(url: str, conn: Connection) -> None:
    """The sender process: post each batch of requests it is sent, answer a `Sent`."""
    asyncio.run(_send_batches(url, conn))


class HttpConnection:
    """One keep-alive HTTP/1.1 connection: h11 (the parser under httpx and uvicorn) over asyncio streams.

    Why not httpx: a provider posts from its own machines, but this sender shares the benchmark's cores with
    the path it measures, so it should cost as little CPU as a load generator can: httpx took about 0.9 ms
    of CPU per request here, this takes about 0.2 ms.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader, self.writer, self.host = reader, writer, host
        self.h11 = h11.Connection(h11.CLIENT)

    @classmethod
    async def open(cls, url: str) -> HttpConnection:
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        return cls(reader, writer, parts.netloc)

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """Status and body of the answer to one POST."""
        fields = [("host", self.host), ("content-length", str(len(body))), *headers.items()]
        request = h11.Request(method="POST", target=path, headers=fields)
        events = (request, h11.Data(data=body), h11.EndOfMessage())
        self.writer.write(b"".join(self.h11.send(event) or b"" for event in events))  # one write, one packet
        status, answer = 0, bytearray()
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                self.h11.receive_data(await self.reader.read(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                answer += event.data
            elif isinstance(event, h11.EndOfMessage):
                self.h11.start_next_cycle()
                return status, bytes(answer)
            else:
                raise SystemExit(f"unexpected HTTP event from the API: {event!r}")

    def close(self) -> None:
        self.writer.close()


async def _send_batches(url: str, conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    with contextlib.suppress(EOFError):
        while (batch := await loop.run_in_executor(None, conn.recv)) is not None:
            # New connections per batch: uvicorn closes idle keep-alive connections after 5 s.
            connections = [await HttpConnection.open(url) for _ in range(CONCURRENCY)]
            try:
                conn.send(await _send_batch(connections, batch))
            finally:
                for connection in connections:
                    connection.close()


async def _send_batch(connections: list[HttpConnection], batch: list[SignedRequest]) -> Sent:
    answers: list[tuple[int, bytes]] = [(0, b"")] * len(batch)

    async def post(slot: int, index: int) -> None:
        body, headers = batch[index]
        answers[index] = await connections[slot].post(PATH, body, headers)

    start = time.perf_counter()
    latencies = await each(list(range(len(batch))), post, CONCURRENCY)
    return time.perf_counter() - start, latencies, answers


class ApiServer(uvicorn.Server):
    """uvicorn without its own signal handling: Ctrl-C stops the benchmark, which stops the server."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serve(settings: Settings, client: Client) -> AsyncIterator[str]:
    """The API on a free 127.0.0.1 port, in this event loop, bound by uvicorn as `scheduler up` binds it; its URL.

    uvicorn binds the port itself (port 0: the kernel picks one), so its sockets are IPPROTO_TCP ones, on
    which asyncio turns Nagle's algorithm off. On a socket made here with `socket.socket(AF_INET,
    SOCK_STREAM)` (protocol 0) asyncio leaves it on, and every response, written as headers then body,
    waits for the client's delayed ACK: 40 ms per request on Linux, which this benchmark once measured.
    """
    config = uvicorn.Config(
        create_app(settings, client=client), host="127.0.0.1", port=0, log_level="warning", access_log=False
    )
    server = ApiServer(config)
    task = asyncio.create_task(server.serve())
    try:
        deadline = time.perf_counter() + PHASE_TIMEOUT
        while not server.started:
            if task.done() or time.perf_counter() > deadline:
                raise SystemExit(f"uvicorn did not start: {task.exception() if task.done() else 'timeout'}")
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await bounded(task)


class Bench:
    def __init__(
        self, client: Client, task_queue: str, secret: str, sender: Child, pids: dict[str, int | None]
    ) -> None:
        self.client = client
        self.task_queue = task_queue
        self.webhook = Webhook(secret)
        self.sender = sender
        self.pids = pids
        """Other processes whose CPU is counted, by name."""
        self.rpcs = RpcCounter(client, COUNTED_RPCS)
        self.definition = WorkflowDefinition.model_validate(DEFINITION)
        if problems := [p for p in validate_definition(self.definition) if not p.warning]:
            raise SystemExit(f"the bench definition is invalid: {problems}")
        self.batches = 0
        self.setup_seconds = 0.0
        """Spent starting flows and checking them, outside the measured replies."""

    def cpu(self) -> dict[str, float | None]:
        return {"api": time.process_time()} | {name: process_cpu(pid) for name, pid in self.pids.items()}

    async def phase(self, kind: str, n: int, label: str) -> Phase:
        """Start `n` flows, reply to each the `kind` way (measured), check that each got its reply."""
        start = time.perf_counter()
        ids = await self.start_flows(n, label)
        cpu = self.cpu()
        self.rpcs.calls.clear()
        jiffies = busy_jiffies()
        replying = time.perf_counter()
        seconds, latencies = await (self.webhook_replies(ids) if kind == "webhook" else self.sdk_replies(ids))
        replied = time.perf_counter()
        rpcs = Counter(self.rpcs.calls)
        busy_cores = None
        if jiffies and (after := busy_jiffies()) and after[1] > jiffies[1]:
            busy_cores = (after[0] - jiffies[0]) / (after[1] - jiffies[1]) * (os.cpu_count() or 1)
        await self.wait_ended(ids)
        ended = time.perf_counter() - replying
        cpu_ms = {
            name: (end - begin) / n * 1000
            for (name, begin), end in zip(cpu.items(), self.cpu().values(), strict=True)
            if begin is not None and end is not None and (kind == "webhook" or name != "sender")
        }
        await self.check_status(ids)
        self.setup_seconds += time.perf_counter() - start - (replied - replying)
        return Phase(kind, seconds, latencies, cpu_ms, rpcs, busy_cores, ended)

    async def start_flows(self, n: int, label: str) -> list[str]:
        """Start `n` flows and wait until each has run its first workflow task (answers `status`)."""
        self.batches += 1
        ids = [f"bench-{label}-{self.batches}-{i}-{uuid.uuid4().hex[:8]}" for i in range(n)]

        async def start(_: int, workflow_id: str) -> None:
            flow = FlowInput(
                definition=self.definition,
                campaign_id="bench",
                owner="owner@example.com",
                customer={"id": workflow_id, "name": "Ann", "phone": "+15550001"},
                cart={"id": f"cart-{workflow_id}", "url": "https://shop.example/cart/1"},
            )
            await self.client.start_workflow(
                AbandonedCartWorkflow.run,
                flow,
                id=workflow_id,
                task_queue=self.task_queue,
                search_attributes=start_attributes(flow),
                execution_timeout=FLOW_TIMEOUT,
            )

        async def waiting(_: int, workflow_id: str) -> None:
            handle = self.client.get_workflow_handle(workflow_id)
            while True:
                try:
                    status = await handle.query(STATUS_QUERY, result_type=FlowStatus)
                except Exception:  # its first workflow task has not completed yet
                    await asyncio.sleep(0.05)
                    continue
                if status.current_step != "wait" or status.replies != 0:
                    raise SystemExit(f"flow {workflow_id} is not waiting: {status}")
                return

        await each(ids, start, SETUP_CONCURRENCY)
        await each(ids, waiting, SETUP_CONCURRENCY)
        return ids

    def signed(self, workflow_id: str) -> SignedRequest:
        """A reply as a provider posts it: its id in `webhook-id`, signed now."""
        body = json.dumps({"workflow_id": workflow_id, "text": "Yes please"}).encode()
        msg_id = f"msg_{uuid.uuid4().hex}"
        now = datetime.now(UTC)
        headers = {
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self.webhook.sign(msg_id=msg_id, timestamp=now, data=body.decode()),
        }
        return body, headers

    async def webhook_replies(self, ids: list[str]) -> tuple[float, list[float]]:
        """Post a reply to each flow from the sender; wall seconds and each request's seconds."""
        batch = [self.signed(w) for w in ids]  # signing is the provider's work: done before the clock starts
        self.sender.conn.send(batch)
        seconds, latencies, answers = await self.sender.receive()
        wrong = [
            (w, status, body[:200])
            for w, (status, body) in zip(ids, answers, strict=True)
            if status != 202 or json.loads(body) != {"signaled": [w]}
        ]
        if wrong:
            raise SystemExit(f"{len(wrong)} of {len(ids)} webhook replies not accepted, e.g. {wrong[:3]}")
        return seconds, latencies

    async def sdk_replies(self, ids: list[str]) -> tuple[float, list[float]]:
        """Signal a reply to each flow from this process; wall seconds and each signal's seconds."""

        async def signal(_: int, workflow_id: str) -> None:
            reply = Reply(
                reply_id=f"msg_{uuid.uuid4().hex}", text="Yes please", channel="webhook", received_at=datetime.now(UTC)
            )
            await self.client.get_workflow_handle(workflow_id).signal(CLIENT_ANSWERED_SIGNAL, reply)

        start = time.perf_counter()
        latencies = await each(ids, signal, CONCURRENCY)
        return time.perf_counter() - start, latencies

    async def wait_ended(self, ids: list[str]) -> None:
        """Every flow ended, with exactly one reply (its result)."""

        async def result(_: int, workflow_id: str) -> None:
            handle: WorkflowHandle[Any, FlowStatus] = self.client.get_workflow_handle(
                workflow_id, result_type=FlowStatus
            )
            status = await handle.result()
            if status.replies != 1 or status.outcome != "completed":
                raise SystemExit(f"flow {workflow_id} ended with {status}")

        await each(ids, result, SETUP_CONCURRENCY)

    async def check_status(self, ids: list[str]) -> None:
        """A sample of the flows answers the `status` query with one reply."""

        async def query(_: int, workflow_id: str) -> None:
            status = await self.client.get_workflow_handle(workflow_id).query(STATUS_QUERY, result_type=FlowStatus)
            if status.replies != 1:
                raise SystemExit(f"flow {workflow_id} answers status {status}")

        await each(random.sample(ids, min(STATUS_SAMPLE, len(ids))), query, STATUS_SAMPLE)


def cpu_text(cpu_ms: dict[str, float]) -> str:
    return ", ".join(f"{name} {ms:4.2f}" for name, ms in cpu_ms.items())


def rpcs_text(rpcs: Counter[str], n: int) -> str:
    """Calls per reply, as "1.00 signal, 0.01 describe" (method names without `_workflow_execution`)."""
    return ", ".join(f"{count / n:.2f} {name.split('_')[0]}" for name, count in rpcs.items()) or "none"


def phase_line(phase: Phase) -> str:
    return (
        f"{phase.rate:7.1f} replies/s  p50 {percentile(phase.latencies, 0.5) * 1000:6.1f} ms"
        f"  p99 {percentile(phase.latencies, 0.99) * 1000:6.1f} ms  CPU ms/reply: {cpu_text(phase.cpu_ms)}"
    )


async def bench(workdir: Path) -> list[Phase]:
    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    settings = load_settings()
    settings.channels.outbox = workdir / "outbox.jsonl"
    settings.store.url = f"sqlite:///{workdir / 'scheduler.db'}"  # not the dev data's
    settings.webhooks.secret = secret
    settings.temporal.task_queue = f"bench-webhooks-{uuid.uuid4()}"
    env = await local_environment()
    phases: list[Phase] = []
    try:
        client = env.client
        target = client.service_client.config.target_host
        async with contextlib.AsyncExitStack() as stack:
            args = (target, client.namespace, settings.temporal.task_queue, str(settings.channels.outbox))
            worker = Child("worker", worker_main, *args)
            stack.callback(worker.stop)
            if await worker.receive() != "ready":
                raise SystemExit("the worker did not start")
            url = await stack.enter_async_context(serve(settings, client))
            sender = Child("sender", sender_main, url)
            stack.callback(sender.stop)
            pids = {"worker": worker.process.pid, "sender": sender.process.pid, "dev server": child_pid("temporal")}
            bench = Bench(client, settings.temporal.task_queue, secret, sender, pids)
            for kind in KINDS:
                await bench.phase(kind, WARMUP_FLOWS, f"warmup-{kind}")
            print(f"API at {url}; warm-up done ({WARMUP_FLOWS} replies each way)")
            print(f"{ROUNDS} rounds of {FLOWS_PER_PHASE} replies each way, {CONCURRENCY} in flight:")
            for round_no in range(ROUNDS):
                # ABBA order, so drift over the run (e.g. a growing history store) hits both alike.
                for kind in KINDS if round_no % 2 == 0 else KINDS[::-1]:
                    phase = await bench.phase(kind, FLOWS_PER_PHASE, f"{kind}-{round_no}")
                    phases.append(phase)
                    print(f"  round {round_no + 1} {kind:<7} {phase_line(phase)}")
            print(f"  (starting and checking flows, outside the measured replies: {bench.setup_seconds:.0f}s)")
    finally:
        await env.shutdown()
    return phases


def main() -> None:
    started = time.perf_counter()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="scheduler-bench-") as tmp:
        phases = asyncio.run(bench(Path(tmp)))
    by_kind = {k: [p for p in phases if p.kind == k] for k in KINDS}
    rate = {k: statistics.median(p.rate for p in v) for k, v in by_kind.items()}
    cpu = {k: {n: statistics.median(p.cpu_ms[n] for p in v) for n in v[0].cpu_ms} for k, v in by_kind.items()}
    # Latency percentiles over all the rounds' replies of a kind.
    latencies = {k: [x for p in v for x in p.latencies] for k, v in by_kind.items()}
    p50 = {k: percentile(v, 0.5) * 1000 for k, v in latencies.items()}
    p99 = {k: percentile(v, 0.99) * 1000 for k, v in latencies.items()}
    ratio = rate["webhook"] / rate["sdk"]
    print(f"medians of {ROUNDS} rounds (CPU from the first reply until the flows ended; api: this process):")
    for kind, label in (("webhook", "webhook (POST /webhooks/replies)"), ("sdk", "sdk (handle.signal loop)")):
        print(
            f"  {label:<33} {rate[kind]:7.1f} replies/s  p50 {p50[kind]:6.1f} ms  p99 {p99[kind]:6.1f} ms"
            f"  CPU ms/reply: {cpu_text(cpu[kind])}"
        )
    ended = {k: statistics.median(len(p.latencies) / p.ended_seconds for p in v) for k, v in by_kind.items()}
    print(
        f"  until the flows ended: webhook {ended['webhook']:.1f}, sdk {ended['sdk']:.1f} replies/s"
        f" (ratio {ended['webhook'] / ended['sdk']:.3f}; the worker's backlog mostly lands after the faster phase)"
    )
    for kind in KINDS:
        rpcs = sum((p.rpcs for p in by_kind[kind]), Counter[str]())
        print(f"  {kind} RPCs per reply (this process, while replying): {rpcs_text(rpcs, len(latencies[kind]))}")
    # All these processes share the machine's cores, and so does anything else running on it: when they
    # are all busy, whatever CPU a path adds per reply (the sender's included) costs it throughput.
    busy = {k: [p.busy_cores for p in v if p.busy_cores is not None] for k, v in by_kind.items()}
    if all(busy.values()):
        cores = ", ".join(f"{k} {statistics.median(v):.1f}" for k, v in busy.items())
        print(f"  cores busy while replying (median): {cores} of {os.cpu_count()}")
    print(f"  load average {load:.1f} before, {os.getloadavg()[0]:.1f} after")
    print(f"  ratio webhook/sdk: {ratio:.3f}  (target >= 0.8; total {time.perf_counter() - started:.0f}s)")
    result = {
        "name": "webhook_replies_per_second",
        "value": round(rate["webhook"], 2),
        "unit": "replies/s",
        "baseline": round(rate["sdk"], 2),
        "ratio": round(ratio, 4),
        "p50_ms": round(p50["webhook"], 2),
        "p99_ms": round(p99["webhook"], 2),
        "baseline_p50_ms": round(p50["sdk"], 2),
        "baseline_p99_ms": round(p99["sdk"], 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
