"""Remembered decisions: a human approval that also holds for later calls matching a pattern derived from the call.

Why: asking again for every `npm test` trains people to approve blindly. An approve decision may carry a scope
(`RememberDecision`): `once` (the default), `session` (later calls of this session), or `project` (later calls of
every session of a named project, kept by workflows/project_grants.py). The pattern is derived from the approved
call, never written by hand, and is as narrow as the shell and path readers allow:

- Commands (`execute_command`): the command's words after quote removal (workflows/shell.py), all of them (the
  exact command) or the first `command_words` (a prefix: "npm test" then covers `npm test -- --watch`). A later call
  matches only when its command is a simple command (with `shell: true`, free of any shell metacharacter) whose words
  equal or begin with those words, in the same working directory (`cwd`; absent, "" and "." are the same). A command
  that chains, pipes, substitutes or redirects cannot be remembered, and never matches.
- File tools (`write_file`, `create_directory`): the path's components (workflows/paths.py), exactly, or everything
  under `path_prefix`, a directory that contains the approved path (at least one component, never just "/"). Paths
  with "..", "~" or backslashes cannot be remembered and never match.

Other tools cannot be remembered (the decision is refused before anything is recorded). A deny rule of the policy
beats every remembered decision (workflows/policy.py). A session keeps at most `SESSION_GRANTS_KEPT` grants (the
oldest goes first); they travel across continue-as-new.

Pure and deterministic, safe inside workflow code.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from workflows.content import marker_ref, refs_in
from workflows.model import ApprovalGrant, GrantScope, RememberDecision
from workflows.paths import ROOT, path_components, render_path
from workflows.predicates import shell_mode
from workflows.shell import ShellRefusal, parse_simple_command, shell_metacharacters

# Tool -> the argument its pattern reads, and how: a shell command or a path.
REMEMBERED_TOOLS: dict[str, tuple[str, str]] = {
    "execute_command": ("command", "command"),
    "write_file": ("path", "path"),
    "create_directory": ("path", "path"),
}
CWD_ARGUMENT = "cwd"
SESSION_GRANTS_KEPT = 100
REVOKED_KEPT = 20


def can_be_remembered(tool_name: str, arguments: dict[str, Any]) -> bool:
    """Whether any grant could approve this call: its tool can be remembered and its argument can be read."""
    return tool_name in REMEMBERED_TOOLS and not isinstance(
        _pattern(tool_name, arguments, RememberDecision(scope=GrantScope.SESSION)), str
    )


def remember_refusal(tool_name: str, arguments: dict[str, Any], remember: RememberDecision | None) -> str | None:
    """Why this call's approval cannot be remembered as asked, or None when it can (or nothing is to be remembered)."""
    if remember is None or remember.scope is GrantScope.ONCE:
        return None
    pattern = _pattern(tool_name, arguments, remember)
    return pattern if isinstance(pattern, str) else None


def derive_grant(
    tool_name: str,
    arguments: dict[str, Any],
    remember: RememberDecision,
    *,
    grant_id: str,
    session_id: str,
    call_id: str,
    created_at: datetime,
) -> ApprovalGrant | str:
    """The grant an approval with `remember` creates, or why it cannot be created."""
    if remember.scope is GrantScope.ONCE:
        return "an approval for this call only is not remembered"
    pattern = _pattern(tool_name, arguments, remember)
    if isinstance(pattern, str):
        return pattern
    argument, match, words, cwd = pattern
    return ApprovalGrant(
        grant_id=grant_id,
        scope="session" if remember.scope is GrantScope.SESSION else "project",
        project=remember.project,
        tool_name=tool_name,
        argument=argument,
        match=match,
        words=list(words),
        cwd=cwd,
        description=describe(tool_name, argument, match, words, cwd),
        session_id=session_id,
        call_id=call_id,
        created_at=created_at,
    )


def grant_matches(grant: ApprovalGrant, tool_name: str, arguments: dict[str, Any]) -> bool:
    """Whether a grant approves this call (revoked grants approve nothing)."""
    if grant.revoked_at is not None or grant.tool_name != tool_name or tool_name not in REMEMBERED_TOOLS:
        return False
    argument, kind = REMEMBERED_TOOLS[tool_name]
    if grant.argument != argument or marker_ref(arguments) is not None:
        return False
    words = _command_words(arguments, argument) if kind == "command" else _path_words(arguments, argument)
    if isinstance(words, str):
        return False
    if kind == "command" and _cwd(arguments) != grant.cwd:
        return False
    wanted = tuple(grant.words)
    return words == wanted if grant.match == "exact" else words[: len(wanted)] == wanted


def first_match(grants: Iterable[ApprovalGrant], tool_name: str, arguments: dict[str, Any]) -> ApprovalGrant | None:
    return next((g for g in grants if grant_matches(g, tool_name, arguments)), None)


def same_pattern(a: ApprovalGrant, b: ApprovalGrant) -> bool:
    """Two grants that approve exactly the same calls in the same scope."""
    return (a.scope, a.project, a.tool_name, a.argument, a.match, a.words, a.cwd) == (
        b.scope,
        b.project,
        b.tool_name,
        b.argument,
        b.match,
        b.words,
        b.cwd,
    )


def describe(tool_name: str, argument: str, match: str, words: tuple[str, ...], cwd: str | None) -> str:
    """The pattern as people read it: `execute_command: npm test ...` or `write_file: src/...`."""
    if argument == "path":
        return f"{tool_name}: {render_path(words)}" + ("/..." if match == "prefix" else "")
    text = shlex.join(words) + (" ..." if match == "prefix" else "")
    return f"{tool_name}: {text}" + (f" (in {cwd})" if cwd else "")


class SessionGrants:
    """The remembered decisions of one session, newest last: at most `SESSION_GRANTS_KEPT` active ones, and the
    newest `REVOKED_KEPT` revoked ones (so a repeated revocation is recognised)."""

    def __init__(self, grants: Iterable[ApprovalGrant]) -> None:
        grants = list(grants)
        self._active = [g for g in grants if g.revoked_at is None][-SESSION_GRANTS_KEPT:]
        self._revoked = [g for g in grants if g.revoked_at is not None][-REVOKED_KEPT:]

    def active(self) -> list[ApprovalGrant]:
        return list(self._active)

    def carried(self) -> list[ApprovalGrant]:
        """Everything kept, active and revoked (what continue-as-new carries)."""
        return [*self._active, *self._revoked]

    def get(self, grant_id: str) -> ApprovalGrant | None:
        """An active or revoked grant by id."""
        return next((g for g in (*self._active, *self._revoked) if g.grant_id == grant_id), None)

    def match(self, tool_name: str, arguments: dict[str, Any]) -> ApprovalGrant | None:
        return first_match(self._active, tool_name, arguments)

    def add(self, grant: ApprovalGrant) -> ApprovalGrant:
        """Remember a grant; one with the same pattern already remembered is kept instead (and returned)."""
        existing = next((g for g in self._active if same_pattern(g, grant)), None)
        if existing is not None:
            return existing
        self._active = [*self._active, grant][-SESSION_GRANTS_KEPT:]
        return grant

    def revoke(self, grant_id: str, at: datetime, reason: str | None) -> ApprovalGrant | None:
        """Forget a grant; returns it as revoked, or None when no active grant has this id."""
        grant = next((g for g in self._active if g.grant_id == grant_id), None)
        if grant is None:
            return None
        revoked = grant.model_copy(update={"revoked_at": at, "revoked_reason": reason})
        self._active = [g for g in self._active if g.grant_id != grant_id]
        self._revoked = [*self._revoked, revoked][-REVOKED_KEPT:]
        return revoked


# --- deriving and reading patterns ---

_Pattern = tuple[str, str, tuple[str, ...], str | None]


def _pattern(tool_name: str, arguments: dict[str, Any], remember: RememberDecision) -> _Pattern | str:
    if tool_name not in REMEMBERED_TOOLS:
        remembered = ", ".join(REMEMBERED_TOOLS)
        return f"decisions on {tool_name} cannot be remembered (only on {remembered})"
    if marker_ref(arguments) is not None:
        return "the call's arguments are stored by reference and cannot be remembered"
    argument, kind = REMEMBERED_TOOLS[tool_name]
    if kind == "command":
        if remember.path_prefix is not None:
            return "path_prefix is for file tools; remember a command with command_words"
        words = _command_words(arguments, argument)
        if isinstance(words, str):
            return words
        cwd = _cwd(arguments)
        if cwd is None:
            return "the command's working directory cannot be read for sure (cwd)"
        if remember.command_words is None:
            return argument, "exact", words, cwd
        return argument, "prefix", words[: remember.command_words], cwd
    if remember.command_words is not None:
        return "command_words is for commands; remember a path with path_prefix"
    path = _path_words(arguments, argument)
    if isinstance(path, str):
        return path
    if remember.path_prefix is None:
        return argument, "exact", path, None
    prefix = path_components(remember.path_prefix)
    if prefix is None or prefix == (ROOT,):
        return f"path_prefix {remember.path_prefix!r} is not a directory that can be remembered"
    if path[: len(prefix)] != prefix:
        return f"path_prefix {remember.path_prefix!r} does not contain the path {render_path(path)!r}"
    return argument, "prefix", prefix, None


def _command_words(arguments: dict[str, Any], argument: str) -> tuple[str, ...] | str:
    command = arguments.get(argument)
    if not isinstance(command, str):
        return f"the {argument} is not text that can be read (missing, or stored by reference)"
    parsed = parse_simple_command(command)
    if isinstance(parsed, ShellRefusal):
        return f"only a simple command can be remembered, and this one {parsed.reason}"
    if shell_mode(arguments) and shell_metacharacters(command):
        return "a command run by a shell (shell: true) with shell metacharacters cannot be remembered"
    return parsed.words


def _path_words(arguments: dict[str, Any], argument: str) -> tuple[str, ...] | str:
    path = arguments.get(argument)
    if not isinstance(path, str) or refs_in(path):
        return f"the {argument} is not text that can be read"
    components = path_components(path)
    if components is None:
        return f"the path {path!r} cannot be read for sure ('..', '~', backslashes)"
    return components


def _cwd(arguments: dict[str, Any]) -> str | None:
    """The working directory as compared by command grants: "" for the default; None when it cannot be read."""
    cwd = arguments.get(CWD_ARGUMENT)
    if cwd is None:
        return ""
    if not isinstance(cwd, str):
        return None
    if not cwd.startswith("/") and all(part in ("", ".") for part in cwd.split("/")):
        return ""
    components = path_components(cwd)
    return None if components is None else render_path(components)
