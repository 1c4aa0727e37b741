"""The README and the reference in docs/ say what the project does: their examples are checked against the
shipped files, the config schema and the CLI, and every link between them leads somewhere."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import typer.main
from pydantic import BaseModel

from scheduler.cli import app
from scheduler.config import Settings
from tests.helpers import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
"""What a reader reads: the README and the reference it links to."""
FENCE = re.compile(r"^ *(```|~~~).*?^ *\1[^\n]*$", re.DOTALL | re.MULTILINE)
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)\)")


def page(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8")


def _flatten(data: dict[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    out: dict[tuple[str, ...], Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value and key not in ("condition", "params"):
            out |= _flatten(value, (*prefix, key))
        else:
            out[(*prefix, key)] = value
    return out


def test_the_campaign_excerpt_matches_the_shipped_file() -> None:
    """The campaign file reference is an excerpt of campaigns/abandoned_cart.toml: every key it shows has the
    shipped value (a reference that maps a STOP to another message would teach users to text opted-out people)."""
    block = re.search(r"Its first steps.*?```toml\n(.*?)```", page("docs/campaigns.md"), re.DOTALL)
    assert block is not None
    excerpt = _flatten(tomllib.loads(block.group(1)))
    shipped = _flatten(tomllib.loads((ROOT / "campaigns" / "abandoned_cart.toml").read_text(encoding="utf-8")))

    assert len(excerpt) > 15
    assert {key: shipped.get(key) for key in excerpt} == excerpt


def test_every_config_key_shown_exists() -> None:
    """The configuration overview names real keys: a typo there is a setting users set in vain."""
    block = re.search(r"```toml\n(.*?)```", page("docs/configuration.md"), re.DOTALL)
    assert block is not None
    shown: list[tuple[str, ...]] = []
    section: tuple[str, ...] = ()
    for line in block.group(1).splitlines():
        line = re.sub(r"\{[^}]*\}|#.*", "", line)  # a cap's inline table and comments hold no config keys
        if header := re.match(r"\s*\[([\w.]+)\]", line):
            section = tuple(header.group(1).split("."))
        shown += [(*section, key) for key in re.findall(r"(\w+) = ", line)]

    assert len(shown) > 40
    assert [key for key in shown if not _is_setting(key)] == []


def _is_setting(key: tuple[str, ...]) -> bool:
    model: type[BaseModel] = Settings
    for part in key:
        fields = model.model_fields
        # a key spelled differently in the file than in Python (`from`: a keyword) is the field's alias
        field = fields.get(part) or next((f for f in fields.values() if f.alias == part), None)
        if field is None:
            return False
        model = field.annotation  # type: ignore[assignment]
    return True


def _commands() -> dict[str, set[str]]:
    """Every CLI verb (`suppress add`) with its options."""
    out: dict[str, set[str]] = {}

    def walk(command: Any, path: tuple[str, ...]) -> None:
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, (*path, name))
        out[" ".join(path)] = {opt for param in command.params for opt in param.opts if opt.startswith("-")}

    walk(typer.main.get_command(app), ())
    return out


def test_every_cli_verb_and_option_shown_exists() -> None:
    """The CLI reference's table: each verb it lists and each option it shows is one the CLI takes."""
    commands = _commands()
    shown: list[tuple[str, str]] = []
    for row in re.findall(r"^\| (`scheduler .*?) \|", page("docs/cli.md"), re.MULTILINE):
        group: list[str] = []
        for usage in re.findall(r"`([^`]+)`", row):
            words = re.match(r"[a-z][\w\\| -]*?(?= [^a-z]|$)", usage).group().split()  # the verbs before any argument
            words = words[1:] if words[:1] == ["scheduler"] else [*group, *words]
            *group, verbs = words
            for verb in verbs.split("\\|"):
                name = " ".join([*group, verb])
                shown += [(name, "")] + [(name, opt) for opt in re.findall(r"--[a-z][a-z-]*", usage)]

    assert len({name for name, _ in shown}) > 20
    missing = [(name, opt) for name, opt in shown if name not in commands or (opt and opt not in commands[name])]
    assert missing == []


def slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it: the rendered text, lower case, punctuation dropped, spaces → '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"[`*_~]", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The anchors of a page's headings (outside code blocks); a repeated one gets `-1`, `-2`, … as on GitHub."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#* *$", FENCE.sub("", text), re.MULTILINE):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def broken_links(path: Path) -> list[str]:
    """The relative links of a page that lead to no file, or to no heading of the page they name."""
    text = path.read_text(encoding="utf-8")
    prose = re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))
    broken = []
    for target in LINK.findall(prose):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:: not ours to check
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        if not linked.exists():
            broken.append(f"{path.name}: {target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked.read_text(encoding="utf-8")):
            broken.append(f"{path.name}: {target}: no such heading in {linked.name}")
    return broken


@pytest.mark.parametrize("path", PAGES, ids=lambda path: path.name)
def test_every_relative_link_leads_somewhere(path: Path) -> None:
    assert broken_links(path) == []


def test_the_readme_links_every_docs_page_and_fits_on_a_screen() -> None:
    readme = page("README.md")
    linked = {Path(target.partition("#")[0]) for target in LINK.findall(readme)}

    assert {path.relative_to(ROOT) for path in PAGES[1:]} <= linked
    assert len(readme.splitlines()) <= 200


def test_a_broken_link_is_found(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other page\n\n## Opt-outs: the list\n\n```\n# not a heading\n```\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n[ok](other.md#opt-outs-the-list) [ok](#title) [web](https://example.com/x.md)\n"
        "`[code](nowhere.md)` [gone](nowhere.md) [bad](other.md#opt-outs) [fenced](other.md#not-a-heading)\n"
    )

    assert broken_links(page) == [
        "page.md: nowhere.md: no such file",
        "page.md: other.md#opt-outs: no such heading in other.md",
        "page.md: other.md#not-a-heading: no such heading in other.md",
    ]
