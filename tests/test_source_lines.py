"""Which line holds a key: toml_key_lines, json_key_lines and line_of (tomllib and json report no positions)."""

from __future__ import annotations

import json
import tomllib

import pytest

from scheduler.source_lines import (
    dotted_line,
    dotted_lines,
    json_key_lines,
    line_of,
    toml_key_lines,
    toml_shape_problem,
)

TOML = """\
# [not.a.table] a comment with brackets
title = "x"  # [also] not a table

[audience]
source = "jsonl"

[audience.fields]
"cart.id" = "cart_ref"
'customer.phone' = "mobile"
a.b.c = 1
list = [
  "one",
  "two ]",
]
after_list = 2
text = \"\"\"
line [x]
key = 3
\"\"\"
after_text = 4
lit = '''
[fake]
'''
after_lit = 5
inline = { x = 1, y = { z = 2 } }
multi = [
  { k = 1 },
  { k = 2 },
]
after_multi = 6

[[products]]
name = "a"

[[products]]
name = "b"

[ spaced . table ]
k = 1
"quoted key"=2
bracket = "]"
hash = "# not a comment ["
after_bracket = 7
"""


@pytest.fixture(scope="module")
def toml_lines() -> dict[tuple[str, ...], int]:
    tomllib.loads(TOML)  # the fixture is valid TOML
    return toml_key_lines(TOML)


@pytest.mark.parametrize(
    ("key", "line"),
    [
        (("title",), 2),
        (("audience",), 4),
        (("audience", "source"), 5),
        (("audience", "fields"), 7),
        (("audience", "fields", "cart.id"), 8),
        (("audience", "fields", "customer.phone"), 9),
        (("audience", "fields", "a", "b", "c"), 10),
        (("audience", "fields", "list"), 11),
        (("audience", "fields", "after_list"), 15),
        (("audience", "fields", "text"), 16),
        (("audience", "fields", "after_text"), 20),
        (("audience", "fields", "lit"), 21),
        (("audience", "fields", "after_lit"), 24),
        (("audience", "fields", "inline"), 25),
        (("audience", "fields", "multi"), 26),
        (("audience", "fields", "after_multi"), 30),
        (("products",), 32),
        (("products", "name"), 33),
        (("spaced", "table"), 38),
        (("spaced", "table", "k"), 39),
        (("spaced", "table", "quoted key"), 40),
        (("spaced", "table", "bracket"), 41),
        (("spaced", "table", "hash"), 42),
        (("spaced", "table", "after_bracket"), 43),
    ],
    ids=lambda v: ".".join(v) if isinstance(v, tuple) else str(v),
)
def test_toml_key_lines_finds_key(toml_lines: dict[tuple[str, ...], int], key: tuple[str, ...], line: int) -> None:
    assert toml_lines[key] == line


@pytest.mark.parametrize(
    "key",
    [
        ("not", "a", "table"),
        ("also",),
        ("audience", "fields", "key"),
        ("audience", "fields", "line"),
        ("fake",),
        ("audience", "fields", "fake"),
        ("audience", "fields", "inline", "x"),
        ("audience", "fields", "k"),
        ("audience", "fields", "cart", "id"),
    ],
    ids=[
        "comment-table",
        "trailing-comment",
        "inside-multiline-string",
        "inside-multiline-string-2",
        "inside-literal-string",
        "inside-literal-string-key",
        "inline-table-key",
        "multiline-array-inline-key",
        "quoted-dot-not-split",
    ],
)
def test_toml_key_lines_ignores_non_keys(toml_lines: dict[tuple[str, ...], int], key: tuple[str, ...]) -> None:
    assert key not in toml_lines


@pytest.mark.parametrize(
    ("key", "line"),
    [
        (("audience", "fields", "inline", "y", "z"), 25),
        (("audience", "fields", "multi", 1, "k"), 26),
        (("audience", "fields", "nonexistent"), 7),
        (("spaced", "table", "k"), 39),
        (("nowhere", "at", "all"), 1),
        ((), 1),
    ],
    ids=["inline-table-to-parent", "array-item-to-parent", "unknown-to-table", "exact", "unknown-to-1", "empty-to-1"],
)
def test_line_of_falls_back_to_longest_prefix(
    toml_lines: dict[tuple[str, ...], int], key: tuple[str | int, ...], line: int
) -> None:
    assert line_of(toml_lines, key) == line


def test_toml_key_lines_table_and_array_of_tables_headers() -> None:
    source = "[a]\nx = 1\n[b]\ny = 2\n[[c]]\nz = 3\n"
    assert toml_key_lines(source) == {("a",): 1, ("a", "x"): 2, ("b",): 3, ("b", "y"): 4, ("c",): 5, ("c", "z"): 6}


def test_toml_key_lines_keeps_first_line_of_repeated_key() -> None:
    # The same key under two [[array]] tables: the first one's line (setdefault), never the later one.
    assert toml_key_lines("[[p]]\nname = 1\n[[p]]\nname = 2\n")[("p", "name")] == 2


def test_toml_key_lines_one_line_triple_quoted_string_does_not_swallow_next_keys() -> None:
    source = 'a = """one line"""\nb = 2\n'
    assert toml_key_lines(source) == {("a",): 1, ("b",): 2}


def test_toml_key_lines_multiline_string_closing_an_inline_table() -> None:
    source = '[s.a]\nparams = { template = """Hi\nthere""" }\ngo_to = "b"\n\n[s.b]\nnode = "x"\n'
    tomllib.loads(source)
    lines = toml_key_lines(source)
    assert (lines.get(("s", "a", "go_to")), lines.get(("s", "b")), lines.get(("s", "b", "node"))) == (4, 6, 7)


def test_toml_key_lines_triple_quote_inside_literal_string() -> None:
    source = 'a = \'"""\'\nb = 2\n'
    assert tomllib.loads(source) == {"a": '"""', "b": 2}
    assert toml_key_lines(source) == {("a",): 1, ("b",): 2}


JSON = """\
{
  "start_step": "s1",
  "steps": {
    "s1": {
      "node": "send_message",
      "go_to": "s2",
      "params": {"template": "a \\"quoted\\" {brace} [bracket], \\"x\\": 1"}
    },
    "s2": {
      "node": "wait_answer",
      "tags": [
        "t1",
        {"inner": 1}
      ],
      "after_array": true
    }
  },
  "last": null
}
"""


@pytest.fixture(scope="module")
def json_lines() -> dict[tuple[str, ...], int]:
    json.loads(JSON)  # the fixture is valid JSON
    return json_key_lines(JSON)


@pytest.mark.parametrize(
    ("key", "line"),
    [
        (("start_step",), 2),
        (("steps",), 3),
        (("steps", "s1"), 4),
        (("steps", "s1", "node"), 5),
        (("steps", "s1", "go_to"), 6),
        (("steps", "s1", "params"), 7),
        (("steps", "s1", "params", "template"), 7),
        (("steps", "s2"), 9),
        (("steps", "s2", "node"), 10),
        (("steps", "s2", "tags"), 11),
        (("steps", "s2", "after_array"), 15),
        (("last",), 18),
    ],
    ids=lambda v: ".".join(v) if isinstance(v, tuple) else str(v),
)
def test_json_key_lines_finds_key(json_lines: dict[tuple[str, ...], int], key: tuple[str, ...], line: int) -> None:
    assert json_lines[key] == line


def test_json_key_lines_records_only_keys(json_lines: dict[tuple[str, ...], int]) -> None:
    # Values, string contents ("x": inside the template) and array items are not keys.
    assert json_lines == {
        ("start_step",): 2,
        ("steps",): 3,
        ("steps", "s1"): 4,
        ("steps", "s1", "node"): 5,
        ("steps", "s1", "go_to"): 6,
        ("steps", "s1", "params"): 7,
        ("steps", "s1", "params", "template"): 7,
        ("steps", "s2"): 9,
        ("steps", "s2", "node"): 10,
        ("steps", "s2", "tags"): 11,
        ("steps", "s2", "tags", "inner"): 13,
        ("steps", "s2", "after_array"): 15,
        ("last",): 18,
    }


def test_json_key_lines_array_items_point_at_their_key(json_lines: dict[tuple[str, ...], int]) -> None:
    assert line_of(json_lines, ("steps", "s2", "tags", 0)) == 11
    assert line_of(json_lines, ("steps", "s2", "unknown")) == 9


def test_json_key_lines_compact_nested_objects_share_lines() -> None:
    source = '{\n  "a": "x",\n\n  "b": {"c": [1, {"e": 2}]},\n  "d": 1\n}'
    assert json_key_lines(source) == {("a",): 2, ("b",): 4, ("b", "c"): 4, ("b", "c", "e"): 4, ("d",): 5}


PADDING = "[t]\n" + "".join(f"k{i} = [1.5, {{ a = 2 }}]\n" for i in range(40))
"""Enough dots and brackets that the full scan runs, none of them over a limit."""


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("a.b.c = 1\n", None),
        ("a" + ".a" * 3 + " = 1\n", (1, "a dotted key of more than 3 parts")),
        ('"a"."b".\'c\'.d = 1\n', (1, "a dotted key of more than 3 parts")),
        ("x = 1\n[a . b . c . d]\n", (2, "a dotted key of more than 3 parts")),
        ("x = [1.5, 2.5, 3.5, 4.5]\n", None),
        ('x = "a.b.c.d.e" # f.g.h.i\n', None),
        ('x = """\n.......\n"""\n', None),
        ("x = [[[1]]]\n", None),
        ("x = [[[[1]]]]\n", (1, "arrays or inline tables nested more than 3 levels deep")),
        ("x = { a = { b = { c = { d = 1 } } } }\n", (1, "arrays or inline tables nested more than 3 levels deep")),
        ("x = '[[[['\ny = \"{{{{\"\n# [[[[\n", None),
        ('x = """\n\n"""\ny = [[[[1]]]]\n', (4, "arrays or inline tables nested more than 3 levels deep")),
    ],
    ids=[
        "three-parts",
        "four-parts",
        "quoted-parts",
        "table-header",
        "floats",
        "string-and-comment",
        "multi-line-string",
        "three-deep",
        "four-deep",
        "inline-tables",
        "brackets-in-strings",
        "line-after-multi-line-string",
    ],
)
@pytest.mark.parametrize("padded", [False, True], ids=["short", "padded"])
def test_toml_shape_problem_finds_what_tomllib_cannot_take(
    source: str, expected: tuple[int, str] | None, padded: bool
) -> None:
    """Short files take the fast path (too few dots and brackets to break a limit); padded ones the full scan."""
    lines = PADDING.count("\n") if padded else 0
    found = toml_shape_problem((PADDING if padded else "") + source, max_depth=3, max_key_parts=3)
    assert found == (None if expected is None else (expected[0] + lines, expected[1]))


def test_dotted_line_finds_keys_that_hold_a_dot_and_falls_back_to_a_prefix() -> None:
    source = '[audience]\nsource = "csv"\n\n[audience.fields]\n"customer.phone" = "mobile"\n'
    lines = dotted_lines(toml_key_lines(source))
    assert dotted_line(lines, "audience.fields.customer.phone") == 5
    assert dotted_line(lines, "audience.fields.cart.id") == 4
    assert dotted_line(lines, "nowhere") == 1
