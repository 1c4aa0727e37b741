"""Workflow definitions: steps, `go_to`, event-type conditions, and their validation.

A definition is plain data (the seed's JSON shape, or a campaign file's `[workflow]` table). It is
validated before anything runs; `AbandonedCartWorkflow` then interprets it (see `engine`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
)

from scheduler.errors import clip
from scheduler.flow.intents import MAX_PHRASE, MAX_PHRASES, match_intent, normalize
from scheduler.flow.nodes import EventType, get_node, node_names
from scheduler.flow.nodes.split import MAX_VARIANTS, Split, plain_name_problem
from scheduler.flow.nodes.wait_answer import (
    OPT_OUT_KEYWORDS,
    SERVICE_HELP_KEYWORDS,
    SERVICE_OPT_OUT_KEYWORDS,
    WaitAnswer,
)
from scheduler.flow.signals import EXIT_SIGNALS
from scheduler.problems import Problem

TemplateCheck = Callable[[str], object]
"""Raises `ValueError` for a message template that must not be used."""
_CONDITION_EVENTS = {
    "satisfied": EventType.SATISFIED,
    "not_satisfied": EventType.NOT_SATISFIED,
    "timeout": EventType.TIMEOUT,
}
"""The event type each `Condition` field is the target for."""
_CONDITION_FIELDS = {event: key for key, event in _CONDITION_EVENTS.items()}


class Condition(BaseModel):
    """Maps the event type a node gave to the next step."""

    model_config = ConfigDict(extra="forbid")

    satisfied: str | None = None
    not_satisfied: str | None = None
    timeout: str | None = None

    def next_step(self, event: EventType) -> str | None:
        return getattr(self, _CONDITION_FIELDS[event]) or None


class Variant(BaseModel):
    """One way on from a `split` step: its share of the flows, and where they go (None: a holdout, the flow ends)."""

    model_config = ConfigDict(extra="forbid")

    weight: int
    go_to: str | None = None

    @field_validator("weight", mode="before")
    @classmethod
    def _positive_whole(cls, v: Any) -> Any:
        """Strictly an integer: `true` and `4.5` are mistakes, not weights of 1 and 4."""
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"weight must be a positive whole number, not {clip(repr(v), 30)}")
        return v

    @field_validator("go_to")
    @classmethod
    def _empty_is_none(cls, v: str | None) -> str | None:
        return v or None


class Intent(BaseModel):
    """What a reply to a `wait_answer` step asks for: the phrases that say it (`scheduler.flow.intents`), and where
    the flow goes then."""

    model_config = ConfigDict(extra="forbid")

    match: list[str]
    go_to: str


class StepDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    node: str
    go_to: str | None = None
    condition: Condition | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    variants: dict[str, Variant] = Field(default_factory=dict)
    """A `split` step's variants by name (only there)."""
    intents: dict[str, Intent] = Field(default_factory=dict)
    """A `wait_answer` step's intents by name, in file order: the first a reply matches picks the next step."""

    @field_validator("go_to")
    @classmethod
    def _empty_is_none(cls, v: str | None) -> str | None:
        return v or None

    @model_serializer(mode="wrap")
    def _without_empty_tables(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Leave `variants` and `intents` out of every dump while empty, as `exit_on`: a step without them
        serializes as before, so definitions keep their version and workers without the fields still decode
        flow inputs."""
        data: dict[str, Any] = handler(self)
        for field in ("variants", "intents"):
            if not getattr(self, field):
                data.pop(field, None)
        return data

    def next_step(self, event: EventType, variant: str | None = None, intent: str | None = None) -> str | None:
        """The seed's rule: the condition's target for this event, else `go_to`, else the end; a `split`'s: the
        `go_to` of the `variant` it chose; a `wait_answer`'s whose reply matched an `intent`: the intent's."""
        if variant is not None:
            return self.variants[variant].go_to
        if intent is not None:
            return self.intents[intent].go_to
        return (self.condition.next_step(event) if self.condition else None) or self.go_to

    def edges(self) -> list[tuple[str, str]]:
        """(key under this step, target step) for every outgoing edge, in a fixed order."""
        out = [(f"condition.{k}", t) for k, t in (self.condition or Condition()).model_dump().items() if t]
        if self.go_to:
            out.append(("go_to", self.go_to))
        out += [(f"variants.{name}.go_to", v.go_to) for name, v in self.variants.items() if v.go_to]
        out += [(f"intents.{name}.go_to", i.go_to) for name, i in self.intents.items()]
        return out

    def weights(self) -> dict[str, int]:
        return {name: v.weight for name, v in self.variants.items()}


class WorkflowDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start_step: str
    steps: dict[str, StepDefinition]
    exit_on: list[str] = Field(default_factory=list)
    """Signals (`EXIT_SIGNALS`) that end the flow at once, wherever it waits, with outcome `converted` (no
    further step runs)."""

    @field_validator("exit_on")
    @classmethod
    def _known_sorted_once(cls, v: list[str]) -> list[str]:
        """Order and repetition do not matter, so they do not change the version either."""
        for name in v:
            if name not in EXIT_SIGNALS:
                raise ValueError(f"unknown signal {clip(name, 60)!r} (exit_on accepts: {', '.join(EXIT_SIGNALS)})")
        return sorted(set(v))

    @model_serializer(mode="wrap")
    def _without_empty_exit_on(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Leave `exit_on` out of every dump while it is empty, so a definition without it serializes as before.

        The same version and `CampaignSha256`, and flow inputs and schedule actions that workers
        without the field (which forbid unknown keys) still decode.
        """
        data: dict[str, Any] = handler(self)
        if not self.exit_on:
            data.pop("exit_on", None)
        return data

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", exclude_defaults=True), sort_keys=True, separators=(",", ":"))

    @property
    def version(self) -> str:
        """Short sha256 of the canonical definition: equal definitions give equal versions."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:12]


MAX_STEPS = 1000
"""Steps a definition may have. Each step adds history events, and Temporal ends a flow whose history
passes 51,200 events; checked before the steps are validated, which for a huge table takes seconds."""
MAX_STEP_NAME = 100
"""A step's name is the `CurrentStep` search attribute's value (Temporal's limit: 2 KiB) and is in every memo entry."""
_CYCLE_SHOWN = 6
"""Steps a cycle message names at each end; the rest are counted."""


def too_many_steps(data: Any) -> Problem | None:
    """The `MAX_STEPS` rule, on raw data: a definition over it is refused before anything else is validated."""
    steps = data.get("steps") if isinstance(data, dict) else None
    if isinstance(steps, dict) and len(steps) > MAX_STEPS:
        return Problem(key="steps", message=f"{len(steps):,} steps: a definition may have at most {MAX_STEPS:,}")
    return None


def parse_definition(
    data: Any, *, check_template: TemplateCheck | None = None
) -> tuple[WorkflowDefinition | None, list[Problem]]:
    """Build and validate a definition from raw data; the definition is None when it has errors."""
    if problem := too_many_steps(data):
        return None, [problem]
    try:
        definition = WorkflowDefinition.model_validate(data)
    except ValidationError as exc:
        return None, [_problem(e) for e in exc.errors()]
    problems = validate_definition(definition, check_template=check_template)
    return (None if any(not p.warning for p in problems) else definition), problems


def validate_definition(
    definition: WorkflowDefinition, *, check_template: TemplateCheck | None = None
) -> list[Problem]:
    """Every rule of the design: start step, nodes, targets, params, cycles; unreachable steps warn.

    `check_template`: raises `ValueError` for a message template that must not be used
    (`scheduler.delivery.templates.compile_template`); Jinja stays out of the workflow sandbox, so without it
    templates are not checked, as inside a flow, whose definition was fully validated before it started.
    """
    problems: list[Problem] = []
    steps = definition.steps
    if not steps:
        problems.append(Problem(key="steps", message="the definition has no steps"))
    if not definition.start_step:
        problems.append(Problem(key="start_step", message="missing start_step"))
    elif definition.start_step not in steps:
        problems.append(Problem(key="start_step", message=f"unknown step {definition.start_step!r}{_known(steps)}"))
    for name, step in steps.items():
        if not name.isprintable() or len(name) > MAX_STEP_NAME:
            shown = clip(name, 20) if len(name) > MAX_STEP_NAME else name
            message = f"step name {shown!r}: at most {MAX_STEP_NAME} characters, none of them control characters"
            problems.append(Problem(key=f"steps.{name}", message=message))
        problems.extend(_step_problems(name, step, steps, check_template))
    problems.extend(_duplicate_experiments(definition))
    if definition.start_step in steps:
        problems.extend(Problem(key=key, message=message) for key, message in find_cycles(definition))
        reachable = reachable_steps(definition)
        problems.extend(
            Problem(key=f"steps.{name}", message=f"unreachable from start_step {definition.start_step!r}", warning=True)
            for name in steps
            if name not in reachable
        )
    return problems


def _step_problems(
    name: str, step: StepDefinition, steps: dict[str, StepDefinition], check_template: TemplateCheck | None
) -> list[Problem]:
    out: list[Problem] = []
    for key, target in step.edges():
        if target not in steps:
            out.append(Problem(key=f"steps.{name}.{key}", message=f"unknown step {target!r}{_known(steps)}"))
    node = get_node(step.node)
    if node is None:
        out.append(
            Problem(key=f"steps.{name}.node", message=f"unknown node {step.node!r} (known: {', '.join(node_names())})")
        )
        return out
    try:
        node.Params.model_validate(step.params, context={"check_template": check_template})
    except ValidationError as exc:
        out.extend(
            Problem(key=_loc(("steps", name, "params", *e["loc"])), message=_pydantic_message(e)) for e in exc.errors()
        )
    out += _split_problems(name, step, isinstance(node, Split))
    out += _intent_problems(name, step, isinstance(node, WaitAnswer))
    if step.condition:
        for key, event in _CONDITION_EVENTS.items():
            if getattr(step.condition, key) and event not in node.events:
                out.append(
                    Problem(
                        key=f"steps.{name}.condition.{key}",
                        message=f"node {node.name!r} never gives {event.value}",
                        warning=True,
                    )
                )
    return out


def _split_problems(name: str, step: StepDefinition, is_split: bool) -> list[Problem]:
    """A split has variants (and goes on by them alone); no other step has any."""
    key = f"steps.{name}"
    if not is_split:
        return [Problem(key=f"{key}.variants", message="only a split step has variants")] if step.variants else []
    out: list[Problem] = []
    if not step.variants:
        out.append(Problem(key=key, message='a split step needs [variants]: name = { weight = N, go_to = "step" }'))
    elif len(step.variants) > MAX_VARIANTS:
        out.append(
            Problem(key=f"{key}.variants", message=f"{len(step.variants)} variants: a split has at most {MAX_VARIANTS}")
        )
    out += [
        Problem(key=f"{key}.variants.{variant}", message=problem)
        for variant in step.variants
        if (problem := plain_name_problem(variant, "variant name"))
    ]
    if "experiment" not in step.params and (problem := plain_name_problem(name, "the step name")):
        out.append(Problem(key=key, message=f"{problem}; or set params.experiment, which names the experiment"))
    out += [
        Problem(key=f"{key}.{field}", message="a split step goes on by its variants' go_to")
        for field in ("go_to", "condition")
        if getattr(step, field)
    ]
    return out


_SERVICE_KEYWORDS = {normalize(k) for k in (*SERVICE_OPT_OUT_KEYWORDS, *SERVICE_HELP_KEYWORDS)}
"""The service's opt-out and HELP keywords at their defaults (validation has no settings): a reply that is one never
reaches an intent. Opt-in keywords ("YES") do: after lifting the opt-out, the service passes them on as replies."""


def _intent_problems(name: str, step: StepDefinition, is_wait: bool) -> list[Problem]:
    """Intents only on a `wait_answer`; plain names; 1 to `MAX_PHRASES` phrases of 1 to `MAX_PHRASE` characters
    (normalized), none an opt-out or HELP keyword (of the step or the service), none in two intents; an intent
    whose every phrase an earlier intent catches ("send" before "send it") warns: it is never taken."""
    key = f"steps.{name}.intents"
    if not step.intents:
        return []
    if not is_wait:
        return [Problem(key=f"{key}.{next(iter(step.intents))}", message="only a wait_answer step has intents")]
    own = step.params.get("opt_out_keywords", OPT_OUT_KEYWORDS)
    words = own if isinstance(own, list | tuple) else ()  # anything else is a params problem already
    keywords = _SERVICE_KEYWORDS | {normalize(k) for k in words if isinstance(k, str)}
    out: list[Problem] = []
    owner: dict[str, str] = {}
    for intent, spec in step.intents.items():
        if problem := plain_name_problem(intent, "intent name"):
            out.append(Problem(key=f"{key}.{intent}", message=problem))
        at = f"{key}.{intent}.match"
        if not spec.match or len(spec.match) > MAX_PHRASES:
            message = f"{len(spec.match)} phrases: an intent has 1 to {MAX_PHRASES}"
            out.append(Problem(key=at, message=message))
            continue
        for i, phrase in enumerate(spec.match):
            word = normalize(phrase)
            if not 1 <= len(word) <= MAX_PHRASE:
                message = f"phrase {clip(phrase, 20)!r}: 1 to {MAX_PHRASE} characters besides surrounding punctuation"
                out.append(Problem(key=f"{at}.{i}", message=message))
            elif word in keywords:
                message = (
                    f"phrase {clip(phrase, 64)!r} is an opt-out or HELP keyword: such a reply never reaches an intent"
                )
                out.append(Problem(key=f"{at}.{i}", message=message))
            elif owner.setdefault(word, intent) != intent:
                message = f"phrase {clip(phrase, 64)!r} is also intent {owner[word]!r}'s: a phrase picks one intent"
                out.append(Problem(key=f"{at}.{i}", message=message))
    if out:
        return out
    earlier: dict[str, list[str]] = {}
    for intent, spec in step.intents.items():
        if all(match_intent(phrase, earlier) is not None for phrase in spec.match):
            message = "every phrase starts with an earlier intent's: this intent is never taken"
            out.append(Problem(key=f"{key}.{intent}", message=message, warning=True))
        earlier[intent] = spec.match
    return out


def experiment_steps(definition: WorkflowDefinition) -> dict[str, str]:
    """Experiment name → the `split` step that runs it (the first, where two share a name: invalid)."""
    out: dict[str, str] = {}
    for name, step in definition.steps.items():
        if step.node == Split.name:
            experiment = step.params.get("experiment") or name
            out.setdefault(str(experiment), name)
    return out


def _duplicate_experiments(definition: WorkflowDefinition) -> list[Problem]:
    first = experiment_steps(definition)
    out: list[Problem] = []
    for name, step in definition.steps.items():
        experiment = str(step.params.get("experiment") or name)
        if step.node == Split.name and first[experiment] != name:
            key = f"steps.{name}.params.experiment" if "experiment" in step.params else f"steps.{name}"
            message = f"experiment {experiment!r} is already run by step {first[experiment]!r}: give each its own name"
            out.append(Problem(key=key, message=message))
    return out


def find_cycles(definition: WorkflowDefinition) -> list[tuple[str, str]]:
    """DFS from the start step; one (key of the closing edge, "a → b → a") per cycle found.

    Iterative (a stack of edge iterators), so a chain of thousands of steps cannot exhaust Python's stack.
    """
    steps = definition.steps
    on_path: list[str] = [definition.start_step]
    on_path_set = {definition.start_step}
    pending = [iter(steps[definition.start_step].edges())]
    done: set[str] = set()
    cycles: list[tuple[str, str]] = []
    while pending:
        name = on_path[-1]
        edge = next(pending[-1], None)
        if edge is None:
            pending.pop()
            on_path_set.discard(on_path.pop())
            done.add(name)
            continue
        key, target = edge
        if target not in steps or target in done:
            continue
        if target in on_path_set:
            loop = [*on_path[on_path.index(target) :], target]
            cycles.append((f"steps.{name}.{key}", "cycle: " + _shorten(loop)))
        else:
            on_path.append(target)
            on_path_set.add(target)
            pending.append(iter(steps[target].edges()))
    return cycles


def _shorten(loop: list[str]) -> str:
    """`a → b → a`, with the middle of a long loop counted instead of named (a message must stay short)."""
    if len(loop) <= 2 * _CYCLE_SHOWN + 1:
        return " → ".join(loop)
    left = len(loop) - 2 * _CYCLE_SHOWN
    return " → ".join([*loop[:_CYCLE_SHOWN], f"… ({left} more) …", *loop[-_CYCLE_SHOWN:]])


def reachable_steps(definition: WorkflowDefinition) -> set[str]:
    seen: set[str] = set()
    todo = [definition.start_step]
    while todo:
        name = todo.pop()
        if name in seen or name not in definition.steps:
            continue
        seen.add(name)
        todo.extend(t for _, t in definition.steps[name].edges())
    return seen


def _problem(error: Any) -> Problem:
    return Problem(key=_loc(error["loc"]), message=_pydantic_message(error))


def _known(steps: dict[str, Any]) -> str:
    return f" (steps: {', '.join(steps)})" if steps else ""


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc)


def _pydantic_message(error: Any) -> str:
    if error["type"] == "missing":
        return "required key is missing"
    if error["type"] == "extra_forbidden":
        return "unknown key"
    msg = str(error["msg"])
    return msg.removeprefix("Value error, ")
