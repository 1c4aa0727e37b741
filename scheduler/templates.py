"""Message templates: Jinja2 in its sandbox, so a campaign file cannot reach into Python."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment

_env = ImmutableSandboxedEnvironment(autoescape=False, keep_trailing_newline=False)


@lru_cache(maxsize=256)
def compile_template(text: str) -> Any:
    """Compile (cached); raise ValueError with the template's line on a syntax error."""
    try:
        return _env.from_string(text)
    except TemplateSyntaxError as exc:
        raise ValueError(f"template syntax error on template line {exc.lineno}: {exc.message}") from None


def render(text: str, context: dict[str, Any]) -> str:
    return str(compile_template(text).render(**context))
