"""Reading TOML and JSON text without parsing it: which line holds a key, and whether a parser can take it.

tomllib and json report no key positions. `key_lines` maps every key path it sees (tables, keys,
dotted keys) to its line; `line_of` finds the line of the longest known prefix, so a key inside an
inline table or array points at its parent. `toml_shape_problem` finds what would make tomllib
recurse too deep or work quadratically, before it is asked to parse.
"""

from __future__ import annotations

import re
import sys
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
    """Scan TOML once, skipping strings (also multi-line) and comments, to find each key's line."""
    lines: dict[KeyPath, int] = {}
    table: KeyPath = ()
    depth = 0  # open brackets of a multi-line array or inline table
    i, n, line, line_start = 0, len(source), 1, True
    while i < n:
        if line_start:
            line_start = False
            if depth == 0:
                end = source.find("\n", i)
                text = source[i : n if end < 0 else end]
                if m := _HEADER.match(text):
                    table = _split(m.group(1))
                    lines.setdefault(table, line)
                    i += m.end()
                    continue
                if m := _ASSIGN.match(text):
                    lines.setdefault((*table, *_split(m.group(1))), line)
                    i += m.end()
                    continue
        c = source[i]
        if c == "\n":
            line, line_start = line + 1, True
        elif c == "#":
            end = source.find("\n", i)
            i = n if end < 0 else end
            continue
        elif source.startswith(('"""', "'''"), i):
            close = _multiline_end(source, i)
            line += source.count("\n", i, close)
            i = close
            continue
        elif c in "\"'":
            i = _string_end(source, i)
            continue
        elif c in "[{":
            depth += 1
        elif c in "]}":
            depth = max(0, depth - 1)
        i += 1
    return lines


_TOML_SIGNIFICANT = re.compile(r"[\"'#\[\]{}=,\n.]")


def toml_shape_problem(source: str, *, max_depth: int, max_key_parts: int) -> tuple[int, str] | None:
    """(line, message) for the first array/inline-table nesting deeper than `max_depth` or dotted key of
    more than `max_key_parts` parts, else None. One linear scan that skips strings and comments.

    tomllib parses nesting recursively (thousands of levels raise RecursionError) and dotted keys in
    quadratic time and memory (20,000 parts: 1.5 GB, 9 s). Dots are counted between the characters
    that end a key (`= , [ ] { }` and newlines), so a float such as `1.5` counts as two parts: harmless
    at any sane limit.
    """
    if source.count(".") < max_key_parts and source.count("[") + source.count("{") <= max_depth:
        return None  # most files: too few dots and brackets to break either limit, wherever they are
    depth, dots, line, i = 0, 0, 1, 0
    while (m := _TOML_SIGNIFICANT.search(source, i)) is not None:
        c, i = m.group(), m.end()
        if c == ".":
            dots += 1
            if dots >= max_key_parts:
                return line, f"a dotted key of more than {max_key_parts} parts"
            continue
        if c == "#":
            end = source.find("\n", i)
            i = len(source) if end < 0 else end
            continue
        if c in "\"'":
            start = i - 1
            i = _multiline_end(source, start) if source.startswith(c * 3, start) else _string_end(source, start)
            line += source.count("\n", start, i)
            continue
        dots = 0
        if c == "\n":
            line += 1
        elif c in "[{":
            depth += 1
            if depth > max_depth:
                return line, f"arrays or inline tables nested more than {max_depth} levels deep"
        elif c in "]}":
            depth = max(0, depth - 1)
    return None


def long_number_line(text: str) -> int | None:
    """The line of the first number with more digits than Python converts (`sys.get_int_max_str_digits`, 4300),
    which tomllib, json and Jinja fail on with a ValueError that says where it is not."""
    found = re.search(rf"\d{{{sys.get_int_max_str_digits() + 1}}}", text)
    return text.count("\n", 0, found.start()) + 1 if found else None


def _string_end(source: str, i: int) -> int:
    """Index just past a one-line string starting at i (basic strings have escapes, literal ones don't)."""
    quote, j = source[i], i + 1
    while j < len(source) and source[j] not in (quote, "\n"):
        j += 2 if quote == '"' and source[j] == "\\" else 1
    return j + 1 if j < len(source) and source[j] == quote else j


def _multiline_end(source: str, i: int) -> int:
    """Index just past a multi-line string starting at i; up to two extra quotes belong to the content."""
    quote, j = source[i : i + 3], i + 3
    while True:
        k = source.find(quote, j)
        if k < 0:
            return len(source)
        if quote == '"""' and _escaped(source, k):
            j = k + 1
            continue
        end = k + 3
        while end < len(source) and source[end] == quote[0] and end - k < 5:
            end += 1
        return end


def _escaped(source: str, k: int) -> bool:
    backslashes = 0
    while k - backslashes - 1 >= 0 and source[k - backslashes - 1] == "\\":
        backslashes += 1
    return backslashes % 2 == 1


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


def dotted_lines(lines: dict[KeyPath, int]) -> dict[str, int]:
    """`lines` keyed as problems name keys: each key path joined with dots (`audience.fields.customer.phone`)."""
    return {".".join(str(part) for part in key): line for key, line in lines.items()}


def dotted_line(lines: dict[str, int], key: str) -> int:
    """The line of a dotted key (see `dotted_lines`), or of its longest known prefix, or 1.

    Matched against whole joined keys, so a key that holds a dot (`"customer.phone"`) is found too.
    """
    while key:
        if key in lines:
            return lines[key]
        key = key.rpartition(".")[0]
    return 1
