"""The conditions of approval rules (`ArgumentPredicate`), read the way the tool will use its arguments.

Why: rules used to compare characters. An allow rule "command startswith 'git status'" then approved
`git status; curl x | sh`, and "path startswith 'src/'" approved `src/../../etc/passwd`. Here a command argument is
read as shell words (workflows/shell.py) and a path as components (workflows/paths.py), and a condition has two
readings, one per kind of rule, each failing towards asking a human:

- `allows` (allow rules): True only when the condition certainly holds. A value that cannot be read for sure never
  satisfies it: a missing argument, a value stored by reference (only its preview is in the workflow), a non-string
  where text is compared, a non-number where numbers are, an invalid regular expression, an unknown operator; on a
  command, anything but a simple command (chains, pipes, substitutions, redirections, assignments in front, anything
  that does not parse) and, with `shell: true`, any shell metacharacter at all; on a path, "..", "~", backslashes.
- `asks` (deny rules): True unless the condition certainly does not hold. Whatever cannot be read counts as matching,
  and text is matched broadly: a deny rule "command startswith 'git push'" also catches `'git' push`, `git -C x
  push`, `sudo git push` and `/usr/bin/git push` (its words in order anywhere in the command's words, the program
  compared by its base name), and every command that does not parse.

Operators on a command (`execute_command`'s `command`): `startswith` is a word prefix (`git status -s` matches "git
status", `git statusx` does not), `equals` compares words, `contains` looks for the words as a run, `matches` is a
full regular-expression match on the command's text (allow rules: only once it is a simple command). On a path
(`path`, `cwd`): `startswith` and `equals` compare components ("src" matches `src/a.py`, not `src2/a.py`);
`contains` and `matches` read the text of a path that is readable. Other arguments: as written, with the types
above. A missing argument satisfies neither reading: the tool's default applies.

Pure and deterministic, safe inside workflow code.
"""

from __future__ import annotations

import math
import posixpath
import re
from enum import Enum
from typing import Any

from workflows.content import marker_ref, refs_in
from workflows.model import ArgumentPredicate
from workflows.paths import path_components, render_path
from workflows.shell import ShellRefusal, SimpleCommand, parse_simple_command, shell_metacharacters

# Tool -> its argument that holds a shell command line; `SHELL_FLAG` says whether a shell runs it.
COMMAND_ARGUMENTS: dict[str, str] = {"execute_command": "command"}
SHELL_FLAG = "shell"
# Arguments (of any tool) that hold a workspace path.
PATH_ARGUMENTS = frozenset({"path", "cwd"})

# Three-valued truth: True, False, or None when the value cannot be read for sure.
Truth = bool | None


class ArgumentKind(Enum):
    COMMAND = "command"
    PATH = "path"
    VALUE = "value"


def argument_kind(tool_name: str, argument: str) -> ArgumentKind:
    """How an argument of a tool is read: as a shell command, as a path, or as a plain value."""
    if COMMAND_ARGUMENTS.get(tool_name) == argument:
        return ArgumentKind.COMMAND
    if argument in PATH_ARGUMENTS:
        return ArgumentKind.PATH
    return ArgumentKind.VALUE


def shell_mode(arguments: dict[str, Any]) -> bool:
    """Whether a shell runs the command: anything but an absent or false `shell` argument counts as yes."""
    flag = arguments.get(SHELL_FLAG, False)
    return flag is not None and flag is not False


def allows(predicate: ArgumentPredicate, tool_name: str, arguments: dict[str, Any]) -> bool:
    """The allow-rule reading: True only when the condition certainly holds."""
    return _truth(predicate, tool_name, arguments, strict=True) is True


def asks(predicate: ArgumentPredicate, tool_name: str, arguments: dict[str, Any]) -> bool:
    """The deny-rule reading: True unless the condition certainly does not hold."""
    return _truth(predicate, tool_name, arguments, strict=False) is not False


def _truth(predicate: ArgumentPredicate, tool_name: str, arguments: dict[str, Any], *, strict: bool) -> Truth:
    if marker_ref(arguments) is not None:
        return None  # the whole argument set is stored by reference: nothing can be read
    if predicate.argument not in arguments:
        return False
    actual = arguments[predicate.argument]
    if refs_in(actual):
        return None
    op, expected = predicate.op, predicate.value
    match argument_kind(tool_name, predicate.argument):
        case ArgumentKind.COMMAND:
            if strict:
                return _command_strict(op, actual, expected, shell=shell_mode(arguments))
            return _command_broad(op, actual, expected, shell=shell_mode(arguments))
        case ArgumentKind.PATH:
            return _path_strict(op, actual, expected) if strict else _path_broad(op, actual, expected)
    return _value_strict(op, actual, expected) if strict else _value_broad(op, actual, expected)


# --- commands ---


def _simple(command: str, *, shell: bool) -> SimpleCommand | None:
    parsed = parse_simple_command(command)
    if isinstance(parsed, ShellRefusal) or (shell and shell_metacharacters(command)):
        return None
    return parsed


def _words(text: str) -> tuple[str, ...] | None:
    parsed = parse_simple_command(text)
    return None if isinstance(parsed, ShellRefusal) else parsed.words


def _command_strict(op: str, actual: Any, expected: Any, *, shell: bool) -> Truth:
    if not isinstance(actual, str) or not isinstance(expected, str):
        return None
    command = _simple(actual, shell=shell)
    if command is None:
        return None
    if op == "matches":
        return _fullmatch(expected, actual)
    if op not in ("startswith", "equals", "contains"):
        return None
    wanted = _words(expected)
    if wanted is None:
        return None
    if op == "startswith":
        return command.words[: len(wanted)] == wanted
    if op == "equals":
        return command.words == wanted
    return _has_run(command.words, wanted)


def _command_broad(op: str, actual: Any, expected: Any, *, shell: bool) -> Truth:
    if not isinstance(actual, str) or not isinstance(expected, str):
        return None
    if _raw(op, actual, expected):
        return True
    command = _simple(actual, shell=shell)
    if command is None:
        return None  # a command that does not parse may run anything
    if op == "matches":
        return _fullmatch(expected, " ".join(command.words))
    if op not in ("startswith", "equals", "contains"):
        return None
    wanted = _words(expected)
    if wanted is None:
        return False  # the rule's own text is not words; its character reading (above) did not match
    if op == "startswith":
        return _in_order(command.words, wanted)
    if op == "equals":
        return command.words == wanted
    return _has_run(command.words, wanted)


def _has_run(words: tuple[str, ...], run: tuple[str, ...]) -> bool:
    return any(words[i : i + len(run)] == run for i in range(len(words) - len(run) + 1))


def _in_order(words: tuple[str, ...], wanted: tuple[str, ...]) -> bool:
    """`wanted` appears in `words` in order (not necessarily adjacent), its program compared by base name."""
    program = posixpath.basename(wanted[0])
    for start, word in enumerate(words):
        if posixpath.basename(word) == program:
            rest = iter(words[start + 1 :])
            # Consuming one iterator keeps the order: each wanted word is looked for after the previous one.
            if all(any(later == item for later in rest) for item in wanted[1:]):
                return True
    return False


# --- paths ---


def _same_components(op: str, components: tuple[str, ...], wanted: tuple[str, ...]) -> bool:
    """`startswith`: `wanted` is a leading run of `components`; `equals`: the two are the same path."""
    return components[: len(wanted)] == wanted if op == "startswith" else components == wanted


def _path_strict(op: str, actual: Any, expected: Any) -> Truth:
    if not isinstance(actual, str) or not isinstance(expected, str):
        return None
    components = path_components(actual)
    if components is None:
        return None
    match op:
        case "startswith" | "equals":
            wanted = path_components(expected)
            if wanted is None:
                return None
            return _same_components(op, components, wanted)
        case "contains":
            return expected in actual
        case "matches":
            return _fullmatch(expected, actual)
    return None


def _path_broad(op: str, actual: Any, expected: Any) -> Truth:
    if not isinstance(actual, str) or not isinstance(expected, str):
        return None
    if _raw(op, actual, expected):
        return True
    components = path_components(actual)
    if components is None:
        return None
    match op:
        case "startswith" | "equals":
            wanted = path_components(expected)
            if wanted is None:
                return False
            return _same_components(op, components, wanted)
        case "contains":
            return False
        case "matches":
            return _fullmatch(expected, render_path(components))
    return None


# --- other values ---


def _value_strict(op: str, actual: Any, expected: Any) -> Truth:
    match op:
        case "equals":
            return _same_json(actual, expected)
        case "contains" | "startswith" | "matches":
            if not isinstance(actual, str) or not isinstance(expected, str):
                return None
            return _raw(op, actual, expected)
        case "gt" | "lt":
            if not (_is_number(actual) and _is_number(expected)):
                return None
            return actual > expected if op == "gt" else actual < expected
    return None


def _value_broad(op: str, actual: Any, expected: Any) -> Truth:
    match op:
        case "equals":
            return bool(actual == expected)
        case "contains" | "startswith" | "matches":
            if not isinstance(actual, str) or not isinstance(expected, str):
                return None
            return _raw(op, actual, expected)
        case "gt" | "lt":
            a, e = _number(actual), _number(expected)
            if a is None or e is None:
                return None
            return a > e if op == "gt" else a < e
    return None


def _raw(op: str, actual: str, expected: str) -> Truth:
    """The character reading of a text operator."""
    match op:
        case "equals":
            return actual == expected
        case "contains":
            return expected in actual
        case "startswith":
            return actual.startswith(expected)
        case "matches":
            return _fullmatch(expected, actual)
    return None


def _fullmatch(pattern: str, text: str) -> Truth:
    try:
        return re.fullmatch(pattern, text) is not None
    except re.error:
        return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _same_json(actual: Any, expected: Any) -> bool:
    """Equality as JSON means it: `true` is not `1`."""
    if isinstance(actual, bool) or isinstance(expected, bool):
        return type(actual) is type(expected) and actual == expected
    return bool(actual == expected)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
