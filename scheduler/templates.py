"""Message templates: Jinja2 in its sandbox, so a campaign file cannot reach into Python.

A template sees exactly four variables (`VARIABLES`); any other name is an error when the campaign
is validated, so a typo never reaches a customer. Data missing from one customer or cart renders
empty instead of failing that customer's flow: authors pick fallbacks with `default(...)` or `or`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import ChainableUndefined, TemplateError, TemplateSyntaxError, meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

VARIABLES = frozenset({"customer", "cart", "campaign", "step"})
"""What the activity renders with (see `activities.template_context`)."""

# The variables templates had before `campaign` and `step` became dicts: say what replaces them.
_RENAMED = {"campaign_id": "campaign.id", "workflow_id": "step.workflow_id", "owner": "campaign.owner"}


class _Blank(ChainableUndefined):
    """A missing value: empty whatever the template does with it (`.x`, `[k]`, `+ 1`, `| round`).

    Jinja's own undefined renders empty but raises on arithmetic, so `{{ cart.total * 2 }}` would fail
    the flow of the one customer whose cart has no total.
    """

    __slots__ = ()

    def _blank(self, *args: Any, **kwargs: Any) -> _Blank:
        return self

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _blank
    __truediv__ = __rtruediv__ = __floordiv__ = __rfloordiv__ = __mod__ = __rmod__ = _blank
    __pow__ = __rpow__ = __pos__ = __neg__ = __abs__ = __round__ = __call__ = _blank

    def _false(self, other: Any) -> bool:
        return False

    __lt__ = __le__ = __gt__ = __ge__ = _false  # type: ignore[assignment]


class _DataEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox, reading dicts as data: `cart.items` is the cart's items, not the `dict.items` method."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, dict):
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)


_env = _DataEnvironment(autoescape=False, keep_trailing_newline=False, undefined=_Blank)


class TemplateRenderError(ValueError):
    """A template that validated but failed on this flow's data (e.g. a number added to a string)."""


@lru_cache(maxsize=256)
def compile_template(text: str) -> Any:
    """Compile (cached).

    Raises:
        ValueError: a syntax error (with the template's line) or a variable other than `VARIABLES`.
    """
    try:
        ast = _env.parse(text)
        unknown = sorted(meta.find_undeclared_variables(ast) - VARIABLES)
        template = _env.from_string(ast)
    except TemplateSyntaxError as exc:
        raise ValueError(f"template syntax error on template line {exc.lineno}: {exc.message}") from None
    if unknown:
        hints = "".join(f"; use {_RENAMED[n]!r} instead of {n!r}" for n in unknown if n in _RENAMED)
        names = ", ".join(repr(n) for n in unknown)
        raise ValueError(f"unknown template variable {names} (templates see {', '.join(sorted(VARIABLES))}){hints}")
    return template


def render(text: str, context: dict[str, Any]) -> str:
    """Render with `context` (keys: `VARIABLES`).

    Raises:
        TemplateRenderError: the template failed on this data; retrying would fail the same way.
    """
    try:
        return str(compile_template(text).render(**context))
    except (TemplateError, TypeError, ValueError, ArithmeticError) as exc:
        raise TemplateRenderError(f"template failed to render: {exc}") from None
