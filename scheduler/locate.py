"""Which line of a TOML or JSON file holds a key: tomllib and json report no key positions.

`key_lines` maps every key path it sees (tables, keys, dotted keys) to its line; `line_of` finds
the line of the longest known prefix, so a key inside an inline table or array points at its parent.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

KeyPath = tuple[str, ...]

_BARE = r"[A-Za-z0-9_-]+"
_KEY = rf'(?:{_BARE}|"(?:[^"\\]|\\.)*"|\'[^\']*\')'
_DOTTED = rf"{_KEY}(?:\s*\.\s*{_KEY})*"
_HEADER = re.compile(rf"^\s*\[\[?\s*({_DOTTED})\s*\]\]?")
_ASSIGN = re.compile(rf"^\s*({_DOTTED})\s*=")
_PART = re.compile(_KEY)


def _split(dotted: str) -> KeyPath:
    return tuple(p[1:-1] if p[0] in "\"'" else p for p in _PART.findall(dotted))


def toml_key_lines(source: str) -> dict[KeyPath, int]:
    lines: dict[KeyPath, int] = {}
    table: KeyPath = ()
    in_multiline: str | None = None
    depth = 0  # open brackets of a multi-line array or inline table
    for number, line in enumerate(source.splitlines(), start=1):
        if in_multiline:
            if line.count(in_multiline) % 2 == 1:
                in_multiline = None
            continue
        if depth == 0:
            if m := _HEADER.match(line):
                table = _split(m.group(1))
                lines.setdefault(table, number)
            elif m := _ASSIGN.match(line):
                lines.setdefault(table + _split(m.group(1)), number)
        code = _strip_strings(line)
        for quote in ('"""', "'''"):
            if line.count(quote) % 2 == 1:
                in_multiline = quote
        depth = max(0, depth + code.count("[") + code.count("{") - code.count("]") - code.count("}"))
        if depth and _HEADER.match(line) and not _ASSIGN.match(line):
            depth = 0  # a table header's own brackets
    return lines


def _strip_strings(line: str) -> str:
    code = re.sub(r'"(?:[^"\\]|\\.)*"|\'[^\']*\'', '""', line)
    return code.split("#", 1)[0]


def json_key_lines(source: str) -> dict[KeyPath, int]:
    """Key paths of a JSON document to the line of each key (objects only; array items share their key's line)."""
    lines: dict[KeyPath, int] = {}
    stack: list[tuple[str, KeyPath]] = []  # ("{" or "[", path of the container)
    path: KeyPath = ()
    line, i, n = 1, 0, len(source)
    expecting_key = False
    while i < n:
        c = source[i]
        if c == "\n":
            line += 1
        elif c == '"':
            j = i + 1
            while j < n and source[j] != '"':
                j += 2 if source[j] == "\\" else 1
            text = source[i + 1 : j]
            if expecting_key and stack and stack[-1][0] == "{":
                path = (*stack[-1][1], text)
                lines.setdefault(path, line)
                expecting_key = False
            line += source[i:j].count("\n")
            i = j
        elif c == "{":
            stack.append(("{", path))
            expecting_key = True
        elif c == "[":
            stack.append(("[", path))
        elif c in "}]":
            if stack:
                stack.pop()
            path = stack[-1][1] if stack else ()
        elif c == ",":
            expecting_key = bool(stack) and stack[-1][0] == "{"
        i += 1
    return lines


def line_of(lines: dict[KeyPath, int], key: Sequence[str | int]) -> int:
    """The line of `key`, or of its longest known prefix, or 1."""
    parts = tuple(str(k) for k in key)
    for end in range(len(parts), 0, -1):
        if parts[:end] in lines:
            return lines[parts[:end]]
    return 1
