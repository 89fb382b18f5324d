"""Check a tool call's arguments against the tool's JSON schema before the workflow acts on them.

Models emit malformed output: a number where an array belongs, a list where a command string belongs, an agent
name that does not exist, or deliberately hostile values. Checking only for missing required arguments let such
calls through, and the workflow code using them crashed. Any such failure must become a model-visible error that
the model can correct, never an exception in workflow code, so this module turns every mismatch into a short,
single-line problem naming the JSON path (`subtasks[1].agent: must be one of coder, debug, ask (got 'pilot')`).

It runs inside Temporal workflow code, so it is pure and deterministic: standard library only, no I/O, no
randomness. It understands the subset of JSON Schema the tool catalogue uses (`type`, `properties`, `required`,
`additionalProperties`, `items`, `minItems`, `maxItems`, `enum`, `minimum`, `maximum`, `minLength`, `maxLength`)
and ignores every other keyword, as well as keywords whose values are malformed. Recursion depth, the number of
values visited and the number of problems reported are all bounded, so a hostile input cannot exhaust the stack or
stall the worker.
"""

from __future__ import annotations

import math
import re
from typing import Any

MAX_DEPTH = 32
"""Deepest nesting (objects and arrays inside each other) that is descended into."""

MAX_PROBLEMS = 10
"""Most problems returned; the last one says that more were left out when there are more."""

MAX_VALUES = 100_000
"""Most values checked in one call; past this the arguments are reported as too large."""

MAX_QUOTED = 40
"""Characters of a string value quoted in a problem before it is cut short."""

_MAX_LISTED = 10
_MAX_INT_DIGITS = 40
_MAX_PATH_STEPS = 8
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KNOWN_TYPES = frozenset({"object", "string", "integer", "number", "boolean", "array", "null"})
_ARTICLES = {"object": "an object", "array": "an array", "integer": "an integer", "null": "null"}

Path = tuple[str | int, ...]


class _Stop(Exception):
    """Raised internally once enough problems were found, or too many values were checked."""


class _Checker:
    """Walks a value and its schema together, collecting problems.

    Attributes:
        problems: Problems found so far, each already formatted.
        visited: Number of values checked so far.
        too_large: Whether the walk stopped because more than `MAX_VALUES` values were checked.
    """

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.visited = 0
        self.too_large = False

    def report(self, path: Path, message: str) -> None:
        """Record one problem; stop the walk once there are more than can be returned.

        Args:
            path: Where in the arguments the problem is.
            message: What is wrong, without the path.

        Raises:
            _Stop: When more than `MAX_PROBLEMS` problems were found.
        """
        self.problems.append(f"{_render_path(path)}: {message}")
        if len(self.problems) > MAX_PROBLEMS:
            raise _Stop

    def check(self, schema: Any, value: Any, path: Path) -> None:
        """Check `value` against `schema`, descending into objects and arrays.

        Args:
            schema: A JSON schema: a dict, or `True` (anything) or `False` (nothing); anything else allows anything.
            value: The JSON value to check.
            path: Where `value` sits in the arguments.

        Raises:
            _Stop: When the walk must end early (too many problems or values).
        """
        self.visited += 1
        if self.visited > MAX_VALUES:
            self.too_large = True
            raise _Stop
        if schema is False:
            self.report(path, "not allowed here")
            return
        if not isinstance(schema, dict):
            return
        if len(path) > MAX_DEPTH:
            self.report(path, f"nested too deeply (more than {MAX_DEPTH} levels)")
            return

        actual = _json_type(value)
        allowed = _schema_types(schema)
        if allowed and not any(_type_matches(actual, expected) for expected in allowed):
            self.report(path, f"expected {_expectation(schema, allowed)}, got {_describe(value)}")
            return

        enum = schema.get("enum")
        if isinstance(enum, list) and enum and not any(_json_equal(value, option, 0) for option in enum):
            self.report(path, f"must be one of {_list_options(enum)} (got {_describe_short(value)})")
            return

        if actual in ("integer", "number"):
            self._check_number(schema, value, path, allowed)
        elif actual == "string":
            self._check_string(schema, value, path)
        elif actual == "array":
            self._check_array(schema, value, path)
        elif actual == "object":
            self._check_object(schema, value, path)

    def _check_number(self, schema: dict[str, Any], value: int | float, path: Path, allowed: list[str]) -> None:
        if isinstance(value, float) and not math.isfinite(value):
            self.report(path, f"expected a finite number, got {_describe(value)}")
            return
        minimum, maximum = _as_number(schema.get("minimum")), _as_number(schema.get("maximum"))
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            self.report(path, f"expected {_expectation(schema, allowed or ['number'])}, got {_describe_number(value)}")

    def _check_string(self, schema: dict[str, Any], value: str, path: Path) -> None:
        low, high = _as_count(schema.get("minLength")), _as_count(schema.get("maxLength"))
        length = len(value)
        if (low is not None and length < low) or (high is not None and length > high):
            bounds = _range_text(low, high, "character")
            self.report(path, f"expected a string of {bounds}, got {_plural(length, 'character')}")

    def _check_array(self, schema: dict[str, Any], value: list[Any] | tuple[Any, ...], path: Path) -> None:
        low, high = _as_count(schema.get("minItems")), _as_count(schema.get("maxItems"))
        count = len(value)
        if (low is not None and count < low) or (high is not None and count > high):
            self.report(path, f"expected an array of {_range_text(low, high, 'item')}, got {_plural(count, 'item')}")
        items = schema.get("items")
        if isinstance(items, dict) or items is False:
            for index, item in enumerate(value):
                self.check(items, item, (*path, index))

    def _check_object(self, schema: dict[str, Any], value: dict[Any, Any], path: Path) -> None:
        properties = schema.get("properties")
        if not isinstance(properties, dict):
            properties = {}
        required = schema.get("required")
        if isinstance(required, list):
            for name in required:
                if isinstance(name, str) and name not in value:
                    self.report((*path, name), "required but missing")
        for name, subschema in properties.items():
            if isinstance(name, str) and name in value:
                self.check(subschema, value[name], (*path, name))
        additional = schema.get("additionalProperties", True)
        if additional is not False and not isinstance(additional, dict):
            return
        for key, item in value.items():
            if isinstance(key, str) and key in properties:
                continue
            if additional is False:
                names = [name for name in properties if isinstance(name, str)]
                hint = f" (allowed: {_list_options(names)})" if names else ""
                self.report((*path, key), f"unexpected property{hint}")
            else:
                self.check(additional, item, (*path, key))


def argument_problems(schema: dict[str, Any], arguments: Any) -> list[str]:
    """Check tool-call arguments against the tool's JSON schema.

    Args:
        schema: The tool's `parameters` JSON schema. Unknown or malformed keywords are ignored.
        arguments: The arguments the model produced, as parsed from JSON (normally a dict, but anything is
            accepted and checked).

    Returns:
        Human-readable problems, each one line of printable text naming the JSON path
        (`suggestions: expected an array of 2-4 items, got integer 5`); at most `MAX_PROBLEMS` of them, and
        empty when the arguments match the schema.
    """
    checker = _Checker()
    try:
        checker.check(schema, arguments, ())
    except _Stop:
        pass
    problems = checker.problems
    if checker.too_large:
        return [*problems[: MAX_PROBLEMS - 1], f"arguments: too large to check (more than {MAX_VALUES} values)"]
    if len(problems) > MAX_PROBLEMS:
        return [*problems[: MAX_PROBLEMS - 1], "further problems not listed"]
    return problems


def describe_problems(tool_name: str, problems: list[str]) -> str:
    """Turn the problems of one call into a single error message for the model.

    Args:
        tool_name: The name of the tool the model called.
        problems: Problems from `argument_problems`.

    Returns:
        One line such as `Invalid arguments for ask_followup_question: suggestions: ...; question: ... Call the
        tool again with arguments that match its schema.`
    """
    name = tool_name if _IDENTIFIER.fullmatch(tool_name) and len(tool_name) <= 64 else _quote(tool_name)
    listed = "; ".join(_printable(problem) for problem in problems)
    body = f": {listed}." if listed else "."
    return f"Invalid arguments for {name}{body} Call the tool again with arguments that match its schema."


# --- Types ---


def _json_type(value: Any) -> str:
    """The JSON type of a value; integral floats count as integers, non-JSON values get their Python type name."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "unsupported"


def _schema_types(schema: dict[str, Any]) -> list[str]:
    """The known type names a schema allows; empty when it does not constrain the type (or only names unknown types)."""
    declared = schema.get("type")
    names = declared if isinstance(declared, list) else [declared]
    return [name for name in names if isinstance(name, str) and name in _KNOWN_TYPES]


def _type_matches(actual: str, expected: str) -> bool:
    return actual == expected or (expected == "number" and actual == "integer")


def _json_equal(left: Any, right: Any, depth: int) -> bool:
    """JSON equality: `true` is not `1`, but `1` is `1.0`; bounded in depth like the rest of the walk."""
    if depth > MAX_DEPTH:
        return False
    left_type, right_type = _json_type(left), _json_type(right)
    if left_type in ("integer", "number") and right_type in ("integer", "number"):
        return bool(left == right)
    if left_type != right_type or left_type == "unsupported":
        return False
    if left_type == "array":
        return len(left) == len(right) and all(_json_equal(a, b, depth + 1) for a, b in zip(left, right, strict=True))
    if left_type == "object":
        return left.keys() == right.keys() and all(_json_equal(left[k], right[k], depth + 1) for k in left)
    return bool(left == right)


def _as_number(value: Any) -> int | float | None:
    """A schema bound, if it is a finite number (booleans are not)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _as_count(value: Any) -> int | None:
    """A schema length or size bound, if it is a non-negative integer (3.0 counts)."""
    number = _as_number(value)
    if number is None or number < 0 or (isinstance(number, float) and not number.is_integer()):
        return None
    return int(number)


# --- Wording ---


def _expectation(schema: dict[str, Any], types: list[str]) -> str:
    """What a schema expects, in words: `an array of 2-4 items`, `an integer between 1 and 300`, `a string or null`."""
    parts = []
    for name in types:
        if name == "array":
            low, high = _as_count(schema.get("minItems")), _as_count(schema.get("maxItems"))
            parts.append(f"an array of {_range_text(low, high, 'item')}" if (low or high is not None) else "an array")
        elif name in ("integer", "number"):
            article = "an integer" if name == "integer" else "a number"
            minimum, maximum = _as_number(schema.get("minimum")), _as_number(schema.get("maximum"))
            if minimum is not None and maximum is not None:
                article += f" between {_format_number(minimum)} and {_format_number(maximum)}"
            elif minimum is not None:
                article += f" >= {_format_number(minimum)}"
            elif maximum is not None:
                article += f" <= {_format_number(maximum)}"
            parts.append(article)
        elif name == "boolean":
            parts.append("a boolean (true or false)")
        else:
            parts.append(_ARTICLES.get(name, f"a {name}"))
    return " or ".join(parts)


def _range_text(low: int | None, high: int | None, noun: str) -> str:
    if low is not None and high is not None:
        return _plural(low, noun) if low == high else f"{_format_number(low)}-{_format_number(high)} {noun}s"
    if high is not None:
        return f"at most {_plural(high, noun)}"
    return f"at least {_plural(low or 0, noun)}"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{_format_number(count)} {noun}s"


def _describe(value: Any) -> str:
    """A short description of a value with its JSON type: `integer 5`, `string 'rm'`, `array of 1 item`."""
    kind = _json_type(value)
    if kind == "null":
        return "null"
    if kind == "boolean":
        return f"boolean {'true' if value else 'false'}"
    if kind in ("integer", "number"):
        return _describe_number(value)
    if kind == "string":
        return f"string {_quote(value)}"
    if kind == "array":
        return f"array of {_plural(len(value), 'item')}"
    if kind == "object":
        return f"object with {_plural(len(value), 'key')}"
    return f"unsupported value of type {_printable(type(value).__name__)[:MAX_QUOTED]}"


def _describe_short(value: Any) -> str:
    """Like `_describe`, but strings and numbers are shown bare: `'pilot'`, `5`."""
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _format_number(value)
    return _describe(value)


def _describe_number(value: int | float) -> str:
    kind = "number" if isinstance(value, float) else "integer"
    return f"{kind} {_format_number(value)}"


def _format_number(value: int | float) -> str:
    """A number as text; huge integers are summarised (converting them in full is slow, or refused past 4300 digits)."""
    if isinstance(value, float):
        return repr(value)
    if value.bit_length() > _MAX_INT_DIGITS * 3:
        return f"{'-' if value < 0 else ''}(about {int(value.bit_length() * math.log10(2)) + 1} digits)"
    return str(value)


def _quote(text: str) -> str:
    """A string quoted for a message: at most `MAX_QUOTED` characters, control characters escaped (`'a\\x00b'`)."""
    if len(text) > MAX_QUOTED:
        return repr(text[:MAX_QUOTED]) + f"... ({len(text)} characters)"
    return repr(text)


def _printable(text: str) -> str:
    """The text with every non-printable character (newlines, NUL, ...) escaped, so it stays on one line."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def _list_options(options: list[Any]) -> str:
    """Enum values or property names for a message: plain short strings bare, anything else described."""
    shown = []
    for option in options[:_MAX_LISTED]:
        plain = isinstance(option, str) and option.isprintable() and 0 < len(option) <= MAX_QUOTED and "," not in option
        shown.append(option if plain else _describe_short(option))
    more = len(options) - _MAX_LISTED
    return ", ".join(shown) + (f", ... ({more} more)" if more > 0 else "")


def _render_path(path: Path) -> str:
    """A JSON path as text: `subtasks[1].agent`, `metadata['odd key']`; the root is `arguments`.

    Long paths keep their first and last steps around `...`, so a message stays short however deep the problem is.
    """
    if not path:
        return "arguments"
    if len(path) > _MAX_PATH_STEPS:
        half = _MAX_PATH_STEPS // 2
        return f"{_render_steps(path[:half])}...{_render_steps(path[-half:])}"
    return _render_steps(path)


def _render_steps(path: Path) -> str:
    rendered = ""
    for step in path:
        if isinstance(step, int) and not isinstance(step, bool):
            rendered += f"[{step}]"
        elif isinstance(step, str) and _IDENTIFIER.fullmatch(step) and len(step) <= MAX_QUOTED:
            rendered += f".{step}" if rendered else step
        elif isinstance(step, str):
            rendered += f"[{_quote(step)}]"
        else:
            rendered += f"[{_describe(step)}]"
    return rendered
