"""Message delivery. Every message sent is also appended to the outbox file as one JSON line."""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class Outbox:
    """Append-only JSON-lines record of what went out, so users and tests can see it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps({"at": datetime.now(UTC).isoformat(), **record}, ensure_ascii=False, default=str)
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as f:
                f.write(line + "\n")

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]


class ConsoleChannel:
    """Delivers by logging: the default channel on one machine."""

    name = "console"

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    def send(self, *, to: str, text: str, campaign_id: str, workflow_id: str, step: str) -> None:
        log.info("[%s] to %s: %s", self.name, to, text)
        self.outbox.append(
            {
                "channel": self.name,
                "to": to,
                "text": text,
                "campaign_id": campaign_id,
                "workflow_id": workflow_id,
                "step": step,
            }
        )


def make_channels(outbox: Outbox) -> dict[str, ConsoleChannel]:
    return {"console": ConsoleChannel(outbox)}
