"""Message templates: Jinja2 in its sandbox, within limits, so a campaign file can neither reach into Python
nor tie up the service.

A template sees exactly four variables (`VARIABLES`); any other name is an error when the campaign
is validated, so a typo never reaches a customer. Data missing from one customer or cart renders
empty instead of failing that customer's flow: authors pick fallbacks with `default(...)` or `or`.

Limits. A render that goes over one raises `TemplateRenderError` saying which and where (the template
line); `compile_template`, which validation runs, refuses what it can see without a customer's data:

- the text is at most `MAX_TEMPLATE_LENGTH` characters, and compiling it folds no arithmetic into
  constants, so validating takes time in proportion to the text;
- no value is longer than `MAX_VALUE_LENGTH` characters or items and no integer longer than
  `MAX_INT_BITS` bits: checked before `*`, `**`, `%`, format widths and width arguments allocate, and
  on what every operator, `~`, call, filter, macro and block makes;
- a render makes at most `MAX_STEPS` loop iterations and calls (macros included);
- `{{ … }}` and `~` take data only (text, numbers, lists and dicts of them), never a function,
  method, class or iterator, which would show a customer its Python repr;
- the text is at most the caller's `max_length` (the channel's), counted as it streams out.

These stop the usual bombs in milliseconds. They bound each value and the number of steps, not
their product: a loop can still pile up values inside a block, and one C-level operation on the
largest values allowed (e.g. `str.translate`) can take seconds, holding the GIL. The worker
therefore renders through `scheduler.delivery.renderer`, in a child process with a CPU deadline and a
memory limit.
"""

from __future__ import annotations

import operator
import re
import string
import sys
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from functools import lru_cache, wraps
from inspect import isroutine, signature
from types import ModuleType
from typing import Any

from jinja2 import ChainableUndefined, Template, TemplateSyntaxError, meta, nodes
from jinja2.runtime import Context, LoopContext, Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from scheduler.errors import clip
from scheduler.source_lines import long_number_line

VARIABLES = frozenset({"customer", "cart", "campaign", "step"})
"""What the activity renders with (see `activities.template_context`)."""

MAX_TEMPLATE_LENGTH = 20_000
"""Characters of template text: ten times a long e-mail, and compiled in well under a second."""
MAX_VALUE_LENGTH = 100_000
"""Characters of a string, items of a list: the longest message a channel sends (e-mail)."""
MAX_INT_BITS = 4_096
"""About 1,200 digits: far beyond any price or count, far below what slows arithmetic down."""
MAX_STEPS = 50_000
"""Loop iterations and calls per render: half a second of work at most (a call costs ~10 µs)."""

# The variables templates had before `campaign` and `step` became dicts: say what replaces them.
_RENAMED = {"campaign_id": "campaign.id", "workflow_id": "step.workflow_id", "owner": "campaign.owner"}


class TemplateRenderError(ValueError):
    """A template that validated but failed on this flow's data (e.g. a number added to a string)."""


class TemplateLimitError(TemplateRenderError):
    """A template went over one of the limits (see the module docstring)."""


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


# Sizes: the checks every hook and the static validation share.


def _check_length(length: int, what: str) -> None:
    if length > MAX_VALUE_LENGTH:
        raise TemplateLimitError(
            f"{what} makes a value of {length:,} characters or items (the limit is {MAX_VALUE_LENGTH:,})"
        )


def _check_bits(bits: int, what: str) -> None:
    if bits > MAX_INT_BITS:
        raise TemplateLimitError(f"{what} makes a number of {bits:,} bits or more (the limit is {MAX_INT_BITS:,})")


_SIZED = (str, bytes, list, tuple, dict, set, frozenset)


def _checked(value: Any, what: str) -> Any:
    """`value`, if within the size limits."""
    if isinstance(value, _SIZED):
        _check_length(len(value), what)
    elif isinstance(value, int):
        _check_bits(value.bit_length(), what)
    return value


def _check_width(width: Any, what: str) -> None:
    if isinstance(width, int) and width > MAX_VALUE_LENGTH:
        raise TemplateLimitError(f"{what}: a width or count of {width:,} is over the limit of {MAX_VALUE_LENGTH:,}")


_BINOPS: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "*": operator.mul,
    "**": operator.pow,
    "%": operator.mod,
}
"""The operators that can make a value much larger than their operands: intercepted, so never folded at compile time."""


def _binop(op: str, left: Any, right: Any) -> Any:
    """`left op right`, refused before computing when the result would be over a limit."""
    what = f"{type(left).__name__} {op} {type(right).__name__}"
    if op == "*":
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, str | list | tuple) and isinstance(times, int):
                _check_length(len(seq) * times, what)
        if isinstance(left, int) and isinstance(right, int) and left and right:
            _check_bits(left.bit_length() + right.bit_length() - 1, what)
    elif op == "**" and isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
        _check_bits((abs(left).bit_length() - 1) * right + 1, what)
    elif op == "%" and isinstance(left, str):
        _check_printf(left)
    return _checked(_BINOPS[op](left, right), what)


_PRINTF_FIELD = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


def _check_printf(fmt: Any) -> None:
    """Widths and precisions of `%`-formatting within the limit; `*` (read from the data) refused."""
    if not isinstance(fmt, str):
        return
    for match in _PRINTF_FIELD.finditer(fmt):
        for number in match.groups():
            if number == "*":
                raise TemplateLimitError("'%' formatting: write widths in the format, not '*'")
            if number:
                _check_width(_number(number), "'%' formatting")


def _check_format(fmt: str) -> None:
    """Widths and precisions of `str.format` specs within the limit; specs made of fields refused."""
    for _, _, spec, _ in string.Formatter().parse(fmt):
        if not spec:
            continue
        if "{" in spec:
            raise TemplateLimitError("format(): write the format spec out, not from a field")
        for number in re.findall(r"\d+", spec):
            _check_width(_number(number), "format()")


def _number(digits: str) -> int:
    return int(digits) if len(digits) <= 18 else sys.maxsize


def _check_replace(s: Any, old: Any, new: Any, count: Any = None) -> None:
    """The exact length of `s.replace(old, new, count)`, before it is made."""
    if isinstance(s, str) and isinstance(old, str) and isinstance(new, str):
        n = s.count(old)
        if isinstance(count, int) and count >= 0:
            n = min(n, count)
        _check_length(len(s) + n * (len(new) - len(old)), "replace()")


def _check_join(separator: Any, items: Any) -> None:
    if isinstance(separator, str) and hasattr(items, "__len__"):
        _check_length(len(separator) * (len(items) - 1), "join()")


_WIDTH_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs", "to_bytes"})
_CHECKED_METHODS = _WIDTH_METHODS | {"replace", "join", "format", "format_map"}


def _check_method(name: str, subject: Any, args: Iterable[Any]) -> None:
    """A method (of a str, bytes or int: data has no others) called with sizes it would allocate."""
    args = list(args)
    if name in _WIDTH_METHODS:
        for arg in args:
            _check_width(arg, f"{name}()")
    elif name == "replace" and len(args) >= 2:
        _check_replace(subject, *args[:3])
    elif name == "join" and args:
        _check_join(subject, args[0])
    elif name in ("format", "format_map") and isinstance(subject, str):
        _check_format(subject)


def _check_filter(name: str, arguments: dict[str, Any]) -> None:
    """A filter called with sizes it would allocate (`arguments` by the filter's parameter names)."""
    if name in ("center", "indent"):
        _check_width(arguments.get("width"), name)
    elif name == "batch":
        _check_width(arguments.get("linecount"), name)
    elif name == "slice":
        _check_width(arguments.get("slices"), name)
    elif name == "replace":
        _check_replace(arguments.get("s"), arguments.get("old"), arguments.get("new"), arguments.get("count"))
    elif name == "join":
        _check_join(arguments.get("d", ""), arguments.get("value"))
    elif name == "format":
        _check_printf(arguments.get("value"))


_PRECHECKED_FILTERS = frozenset({"center", "indent", "batch", "slice", "replace", "join", "format"})


# Work: a budget per render.


class _Budget:
    __slots__ = ("left",)

    def __init__(self) -> None:
        self.left = MAX_STEPS


_budget: ContextVar[_Budget | None] = ContextVar("template_budget", default=None)


def _spend() -> None:
    budget = _budget.get()
    if budget is not None:
        budget.left -= 1
        if budget.left < 0:
            raise TemplateLimitError(f"more than {MAX_STEPS:,} loop iterations and calls")


# What may be printed.


def _is_data(value: Any) -> bool:
    """Text, numbers, missing values, and lists and dicts of them: what `{{ … }}` may print."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str | int | float | _Blank) or item is None:
            continue
        if isinstance(item, list | tuple):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        else:
            return False
    return True


def _describe(value: Any) -> str:
    """What a value that is not data is, for an author, with what to write instead."""
    if isinstance(value, Macro):
        return f"the macro {value.name!r}: call it, {value.name}(…)"
    if isinstance(value, type):
        return f"the class {value.__name__!r}"
    if isroutine(value) or isroutine(getattr(value, "__wrapped__", None)):
        target = getattr(value, "__wrapped__", value)
        owner = getattr(target, "__self__", None)
        name = getattr(target, "__name__", type(value).__name__)
        kind = "method" if owner is not None and not isinstance(owner, ModuleType) else "function"
        return f"the {kind} {name!r}: call it, {name}(…)"
    if isinstance(value, Iterator | range) and not isinstance(value, LoopContext):
        return f"a {type(value).__name__}: add | list, or | join(', ')"
    return f"a {type(value).__name__} object"


def _finalize(value: Any) -> Any:
    """What `{{ value }}` prints: data only."""
    if not isinstance(value, str) and not _is_data(value):
        raise TemplateRenderError(f"prints {_describe(value)} (a customer would see its Python repr)")
    return value


def _join_block(pieces: Iterable[str]) -> str:
    """What a macro, `{% set %}` block or `{% filter %}` block makes (Jinja's `concat`), within the limit."""
    return _checked("".join(pieces), "a block")


class _DataEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox, reading dicts as data (`cart.items` is the cart's items, not `dict.items`), with the limits."""

    intercepted_binops = frozenset(_BINOPS)
    concat = staticmethod(_join_block)

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, dict):
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        return _binop(operator, left, right)

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        _spend()
        if isinstance(obj, LoopContext) and args:  # `loop(children)` of a recursive loop
            args = (self.loop_items(args[0]), *args[1:])
        name = getattr(obj, "__name__", None)
        if name in _CHECKED_METHODS:
            target = getattr(obj, "__wrapped__", obj)  # str.format comes wrapped by the sandbox
            _check_method(name, getattr(target, "__self__", None), [*args, *kwargs.values()])
        return _checked(super().call(context, obj, *args, **kwargs), "a call")

    def loop_items(self, items: Iterable[Any]) -> Iterator[Any]:
        """What every `{% for %}` iterates (see `_Instrument`): the items, each spending a step."""
        for item in items:
            _spend()
            yield item

    def joined(self, items: list[Any]) -> str:
        """What `a ~ b` makes (see `_Instrument`): data only, within the limit."""
        for item in items:
            if not isinstance(item, str) and not _is_data(item):
                raise TemplateRenderError(f"~ joins {_describe(item)} (a customer would see its Python repr)")
        return _checked("".join(map(str, items)), "~")


def _bounded_filter(name: str, f: Callable[..., Any]) -> Callable[..., Any]:
    """`f` with its size arguments checked before, and its result after."""
    parameters = signature(f) if name in _PRECHECKED_FILTERS else None

    @wraps(f)  # keeps Jinja's pass_context/pass_environment marks
    def bounded(*args: Any, **kwargs: Any) -> Any:
        if parameters is not None:
            _check_filter(name, parameters.bind(*args, **kwargs).arguments)
        return _checked(f(*args, **kwargs), f"the filter {name!r}")

    return bounded


def _make_environment() -> _DataEnvironment:
    env = _DataEnvironment(autoescape=False, keep_trailing_newline=False, undefined=_Blank, finalize=_finalize)
    env.filters = {name: _bounded_filter(name, f) for name, f in env.filters.items()}
    # Paragraphs of lorem ipsum, as many as asked: nothing a customer should get.
    del env.globals["lipsum"]
    return env


_env = _make_environment()


# Compiling and validating.


@lru_cache(maxsize=256)
def compile_template(text: str) -> Template:
    """Compile (cached), after refusing what can be seen to fail or go over a limit without data.

    Raises:
        ValueError: a syntax error, a variable other than `VARIABLES`, or a limit (with the template's line).
    """
    if len(text) > MAX_TEMPLATE_LENGTH:
        raise ValueError(f"template is {len(text):,} characters long (the limit is {MAX_TEMPLATE_LENGTH:,})")
    try:
        ast = _parse(text)
        unknown = sorted(meta.find_undeclared_variables(ast) - VARIABLES)
        problems = list(_static_problems(ast))
        template = _env.from_string(_Instrument().visit(ast))
    except TemplateSyntaxError as exc:
        raise ValueError(f"template syntax error on template line {exc.lineno}: {exc.message}") from None
    except RecursionError:
        raise ValueError("template is nested too deeply") from None
    except SyntaxError as exc:  # Python's own, e.g. "too many statically nested blocks" (20 loops)
        raise ValueError(f"template is nested too deeply ({exc.msg})") from None
    if unknown:
        hints = "".join(f"; use {_RENAMED[n]!r} instead of {n!r}" for n in unknown if n in _RENAMED)
        names = ", ".join(repr(n) for n in unknown)
        raise ValueError(f"unknown template variable {names} (templates see {', '.join(sorted(VARIABLES))}){hints}")
    if problems:
        raise ValueError("; ".join(problems))
    return template


def _parse(text: str) -> nodes.Template:
    try:
        return _env.parse(text)
    except ValueError as exc:  # the lexer's int() of a literal longer than Python converts
        if line := long_number_line(text):
            digits = sys.get_int_max_str_digits()
            raise ValueError(f"template line {line}: a number of more than {digits:,} digits") from None
        raise ValueError(f"template cannot be read: {exc}") from None


class _Instrument(NodeTransformer):
    """Routes what Jinja compiles to plain Python through the environment, where the limits apply.

    `{% for x in items %}` iterates `environment.loop_items(items)`, which spends a step per item, and
    `a ~ b` becomes `environment.joined([a, b])`, which refuses objects and checks the size.
    """

    def visit_For(self, node: nodes.For) -> nodes.For:
        self.generic_visit(node)
        node.iter = _call_environment("loop_items", node.iter)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Call:
        self.generic_visit(node)
        return _call_environment("joined", nodes.List(node.nodes))


def _call_environment(method: str, arg: nodes.Expr) -> nodes.Call:
    call = nodes.Call(nodes.EnvironmentAttribute(method), [arg], [], None, None)
    return call.set_lineno(arg.lineno or 1).set_environment(_env)


class _Unknown(Exception):
    """A value only the data can tell."""


_STATIC_OPS: dict[str, Callable[[Any, Any], Any]] = {"-": operator.sub, "/": operator.truediv, "//": operator.floordiv}


def _static(node: nodes.Node) -> Any:
    """The value of an expression made of literals, computed within the limits (`_binop`)."""
    if isinstance(node, nodes.Const):
        return node.value
    if isinstance(node, nodes.List | nodes.Tuple):
        return [_static(item) for item in node.items]
    if isinstance(node, nodes.Neg):
        return -_static(node.node)
    if isinstance(node, nodes.BinExpr):
        left, right = _static(node.left), _static(node.right)
        if node.operator in _BINOPS:
            return _binop(node.operator, left, right)
        if node.operator in _STATIC_OPS:
            try:
                return _STATIC_OPS[node.operator](left, right)
            except (TypeError, ArithmeticError):
                raise _Unknown from None
    raise _Unknown


def _static_or_unknown(node: nodes.Node | None) -> Any:
    """`_static(node)`, or `_Unknown`; raises `TemplateLimitError` past a limit."""
    try:
        return _static(node) if node is not None else _Unknown
    except TemplateLimitError:
        raise
    except (_Unknown, TypeError, ValueError, ArithmeticError):
        return _Unknown


def _static_problems(ast: nodes.Template) -> Iterator[str]:
    """What fails whatever the data: a literal expression over a limit, a size argument over it, an object printed."""
    stored = {n.name for n in ast.find_all(nodes.Name) if n.ctx in ("store", "param")}
    macros = {m.name for m in ast.find_all(nodes.Macro)}
    for node in ast.find_all((nodes.Const, nodes.BinExpr, nodes.Call, nodes.Filter)):
        try:
            _check_static(node, stored)
        except TemplateLimitError as exc:
            yield f"template line {node.lineno}: {exc}"
    printed = [*ast.find_all(nodes.Output), *ast.find_all(nodes.Concat)]
    for expr in (expr for node in printed for expr in node.nodes):
        if what := _printed_object(expr, stored, macros):
            yield f"template line {expr.lineno}: prints {what} (a customer would see its Python repr)"


def _check_static(node: nodes.Node, stored: set[str]) -> None:
    if isinstance(node, nodes.Const):
        _checked(node.value, "a literal")
    elif isinstance(node, nodes.BinExpr):
        if node.operator == "%":
            _check_printf(_static_or_unknown(node.left))
        _static_or_unknown(node)  # raises TemplateLimitError past a limit
    elif isinstance(node, nodes.Call):
        args = [_static_or_unknown(a) for a in node.args]
        if _is_global(node.node, "range", stored) and all(isinstance(a, int) for a in args) and args:
            try:
                length = len(range(*args))
            except (ValueError, OverflowError):  # a step of 0; more items than a C integer counts
                length = 0 if 0 in args[2:] else sys.maxsize
            _check_length(length, "range()")
        elif isinstance(node.node, nodes.Getattr):
            _check_method(node.node.attr, _static_or_unknown(node.node.node), args)
    elif isinstance(node, nodes.Filter) and node.name in _PRECHECKED_FILTERS:
        f = _env.filters[node.name]
        args = [_Unknown] * hasattr(f, "jinja_pass_arg") + [_static_or_unknown(node.node)]
        args += [_static_or_unknown(a) for a in node.args]
        kwargs = {k.key: _static_or_unknown(k.value) for k in node.kwargs}
        try:
            arguments = signature(f).bind(*args, **kwargs).arguments
        except TypeError:
            return  # wrong arguments: the render says so
        _check_filter(node.name, arguments)


def _is_global(node: nodes.Node, name: str | None, stored: set[str]) -> bool:
    """`node` names one of the environment's globals (`name`, or any), not a variable of the template's own."""
    return (
        isinstance(node, nodes.Name)
        and node.name in _env.globals
        and node.name not in stored
        and name in (None, node.name)
    )


_ITERATOR_FILTERS = frozenset({"map", "select", "reject", "selectattr", "rejectattr", "batch", "slice", "unique"})


def _printed_object(expr: nodes.Expr, stored: set[str], macros: set[str]) -> str | None:
    """What `{{ expr }}` prints when it is not data whatever the data: a global, a macro, a literal's method."""
    if _is_global(expr, None, stored):
        assert isinstance(expr, nodes.Name)
        value = _env.globals[expr.name]
        return f"the {'class' if isinstance(value, type) else 'function'} {expr.name!r}"
    if isinstance(expr, nodes.Name) and expr.name in macros and expr.name not in stored:
        return f"the macro {expr.name!r}: call it, {expr.name}(…)"
    if isinstance(expr, nodes.Getattr) and not expr.attr.startswith("_"):
        literal = _static_or_unknown(expr.node)
        if isinstance(literal, str | int | float) and callable(getattr(literal, expr.attr, None)):
            return f"the method {expr.attr!r} of a {type(literal).__name__}: call it, {expr.attr}(…)"
    if isinstance(expr, nodes.Call) and _is_global(expr.node, "range", stored):
        return "a range: add | list, or | join(', ')"
    if isinstance(expr, nodes.Filter) and expr.name in _ITERATOR_FILTERS:
        return f"an iterator (from | {expr.name}): add | list, or | join(', ')"
    return None


# Rendering.


def render(text: str, context: dict[str, Any], *, max_length: int = MAX_VALUE_LENGTH) -> str:
    """Render with `context` (keys: `VARIABLES`), in this thread: the worker uses `scheduler.delivery.renderer` instead.

    Raises:
        TemplateRenderError: the template failed on this data or went over a limit (the text over
            `max_length` characters, too); retrying would fail the same way.
    """
    budget = _budget.set(_Budget())
    try:
        pieces: list[str] = []
        length = 0
        for piece in compile_template(text).generate(**context):
            length += len(piece)
            if length > max_length:
                raise TemplateLimitError(f"the text is longer than {max_length:,} characters")
            pieces.append(piece)
        return "".join(pieces)
    except Exception as exc:  # whatever it is (a KeyError of str.format, a RecursionError), the template caused it
        message = "it needs too much memory" if isinstance(exc, MemoryError) else str(exc) or type(exc).__name__
        message = clip(message, _MAX_MESSAGE)  # it may quote the data, and it goes to Temporal and the logs
        error = TemplateLimitError if isinstance(exc, TemplateLimitError | MemoryError) else TemplateRenderError
        raise error(f"template failed to render{_line(exc)}: {message}") from None
    finally:
        _budget.reset(budget)


_MAX_MESSAGE = 500


def _line(exc: BaseException) -> str:
    """` (template line N)`: the template line the error was raised from (Jinja maps its frames to template lines)."""
    line, tb = None, exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return f" (template line {line})" if line else ""
