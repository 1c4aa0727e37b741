"""Errors the scheduler raises on purpose.

    SchedulerError
    ├── ConfigError        the service config file or an override is wrong
    ├── CampaignError      a campaign file (or seed-shaped JSON definition) has problems
    ├── DefinitionError    a workflow definition is invalid (raised inside a running flow)
    ├── UnknownCampaign    no campaign with that id in the campaigns directory
    └── DevServerError     the embedded Temporal dev server could not start
"""

from __future__ import annotations

from dataclasses import dataclass


class SchedulerError(Exception):
    """Base class: its message is meant for the user, one line, naming what and where."""


class ConfigError(SchedulerError):
    pass


@dataclass(frozen=True)
class Problem:
    """One thing wrong (or suspicious) in a campaign file, located by file, line and key."""

    path: str
    line: int
    key: str
    message: str
    warning: bool = False

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}"
        kind = "warning: " if self.warning else ""
        return f"{where}: {self.key}: {kind}{self.message}" if self.key else f"{where}: {kind}{self.message}"


class CampaignError(SchedulerError):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = [p for p in problems if not p.warning]
        super().__init__("\n".join(str(p) for p in self.problems))


class DefinitionError(SchedulerError):
    pass


class UnknownCampaign(SchedulerError):
    def __init__(self, campaign_id: str, directory: str) -> None:
        self.campaign_id = campaign_id
        super().__init__(f"unknown campaign {campaign_id!r}: no campaign file in {directory!r} has that id")


class DevServerError(SchedulerError):
    pass
