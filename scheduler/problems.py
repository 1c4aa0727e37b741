"""`Problem`: one finding of a check of a campaign file (an error or a warning), not an exception.

Checks that see part of a file (a definition, an `[audience]` table) name the key inside that part;
the loader places each under its table and at its line, so the user reads `path:line: key: message`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Problem:
    path: str = ""
    """The file, as the user would type it (relative to the working directory when under it)."""
    line: int = 0
    """1-based; 0 while not placed."""
    key: str = ""
    """Dotted, as written in the file (`workflow.steps.step_2.go_to`); empty for the file as a whole."""
    message: str = ""
    warning: bool = False

    def under(self, table: str) -> Problem:
        """This problem of a part of a file, keyed from the file's top (`steps.a` under `workflow`)."""
        return replace(self, key=f"{table}.{self.key}" if self.key else table)

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}"
        kind = "warning: " if self.warning else ""
        return f"{where}: {self.key}: {kind}{self.message}" if self.key else f"{where}: {kind}{self.message}"
