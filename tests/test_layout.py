"""The package's layout rules (the folder tree is the code map), checked on the source.

Rooms, bottom up: the ground floor (modules at the top level that everything uses, and the `flow` sandbox),
then `store`, `audience`, `delivery`, `campaigns`, `replies`, `experiments`; on top the processes and interfaces (`api`,
`cli`, `service`, `worker`, `simulate`, `campaign_tests`), which may import any room. No import runs back up.
"""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import scheduler
from scheduler import errors
from scheduler.errors import SchedulerError

PACKAGE = Path(scheduler.__file__).parent
SANDBOX_FORBIDDEN = ("fastapi", "starlette", "uvicorn", "httpx", "sqlalchemy", "aiosmtpd", "jinja2", "typer")
"""Web, database, mail and template libraries: workflow code must never need them."""
SANDBOX_MAY_USE = ("scheduler", "scheduler.errors", "scheduler.problems")
"""The only modules of the package outside `scheduler.flow` that workflow code may import (stdlib-only leaves)."""


GROUND = (
    "config",
    "devserver",
    "errors",
    "http_clients",
    "metrics",
    "problems",
    "signatures",
    "source_lines",
    "temporal",
)
GROUND += ("visibility", "flow")
"""Top-level modules (and the sandbox package) that any room may import; they import no room."""
ROOMS: dict[str, set[str]] = {
    "store": set(),
    "audience": set(),
    "delivery": {"store"},
    "campaigns": {"store", "audience", "delivery"},
    "replies": {"store", "delivery", "campaigns"},
    "experiments": {"store", "campaigns"},
}
"""Each room's package, and the rooms it may import besides itself and the ground floor."""
TOP = ("api", "cli", "service", "worker", "simulate", "campaign_tests")
"""The processes and interfaces: they may import everything, and nothing imports them but each other."""


def room(name: str) -> str:
    """`scheduler.campaigns.stop` -> `campaigns`; a ground-floor module -> `ground`; a top one -> its name."""
    first = name.split(".")[1] if "." in name else ""
    if first in ROOMS or first in TOP:
        return first
    assert first in GROUND or first == "", f"{name}: put it in a room, or name it in GROUND or TOP"
    return "ground"


def in_sandbox(name: str) -> bool:
    return name == "scheduler.flow" or name.startswith("scheduler.flow.")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path, known: dict[str, Path]) -> list[tuple[str, list[str]]]:
    """(module, names) for every import of the package in a file, also inside functions and TYPE_CHECKING."""
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names if alias.name.split(".")[0] == "scheduler")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "scheduler":
            for alias in node.names:  # `from scheduler.flow import attributes` imports the module attributes
                sub = f"{node.module}.{alias.name}"
                found.append((sub, []) if sub in known else (node.module, [alias.name]))
    return found


def test_sandbox_package_imports_no_io_library_and_nothing_of_ours_outside_it() -> None:
    """Every module of `scheduler.flow`, imported in a fresh interpreter, pulls in none of the forbidden ones."""
    flow = sorted(name for name in modules() if in_sandbox(name))
    script = "; ".join(
        [
            "import importlib, json, sys",
            *(f"importlib.import_module({m!r})" for m in flow),
            "print(json.dumps(sorted(sys.modules)))",
        ]
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, check=True, text=True)
    loaded = json.loads(run.stdout)
    assert len(flow) > 10
    assert [m for m in loaded if m.split(".")[0] in SANDBOX_FORBIDDEN] == []
    ours = [m for m in loaded if m.split(".")[0] == "scheduler" and not in_sandbox(m)]
    assert sorted(ours) == sorted(SANDBOX_MAY_USE)


def test_no_import_cycle_in_the_package() -> None:
    known = modules()
    graph = {name: sorted({target for target, _ in imports(path, known) if target in known} - {name})
             for name, path in known.items()}  # fmt: skip
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in graph[name]:
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[name] = 2

    for name in graph:
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_every_import_stays_in_its_room_or_goes_down() -> None:
    known = modules()
    up = [
        f"{name} imports {target}"
        for name, path in known.items()
        for target, _ in imports(path, known)
        if target in known and (here := room(name)) not in TOP
        if (there := room(target)) != here and there != "ground" and (here == "ground" or there not in ROOMS[here])
    ]
    assert up == []


def test_every_package_holds_more_than_one_module() -> None:
    packages = {path.parent for path in PACKAGE.rglob("__init__.py")}
    held = {p: [m for m in p.glob("*.py") if m.name != "__init__.py"] + [d for d in p.iterdir() if d in packages]
            for p in packages}  # fmt: skip
    assert len(packages) > 5
    assert [str(p.relative_to(PACKAGE.parent)) for p, inside in held.items() if len(inside) < 2] == []


def test_no_private_name_is_imported_from_another_module() -> None:
    known = modules()
    private = [
        f"{module_name(path)} imports {target}.{name}"
        for path in known.values()
        for target, names in imports(path, known)
        for name in names
        if name.startswith("_")
    ]
    assert private == []


def test_sandbox_modules_import_only_the_sandbox_and_errors() -> None:
    """The same rule, read from the source: also imports inside functions, which a fresh import does not run."""
    known = modules()
    outside = [
        f"{name} imports {target}"
        for name, path in known.items()
        if in_sandbox(name)
        for target, _ in imports(path, known)
        if not in_sandbox(target) and target not in SANDBOX_MAY_USE
    ]
    assert outside == []


def test_every_scheduler_error_lives_in_errors_and_is_in_its_tree() -> None:
    for name in modules():
        if not name.startswith("scheduler.store.migrations."):  # Alembic runs those, inside its own context
            importlib.import_module(name)
    found: list[type[SchedulerError]] = []
    todo = [SchedulerError]
    while todo:
        found.extend(subclasses := todo.pop().__subclasses__())
        todo.extend(subclasses)
    assert len(found) > 15
    assert [c.__qualname__ for c in found if c.__module__ != "scheduler.errors"] == []
    assert [c.__name__ for c in found if f"── {c.__name__} " not in (errors.__doc__ or "")] == []
