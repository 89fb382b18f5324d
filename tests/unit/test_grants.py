"""Remembered decisions (workflows/grants.py) and the path reader they and the rules use (workflows/paths.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from tests.unit.test_shell import BYPASSES
from workflows.content import ref_marker
from workflows.grants import (
    REVOKED_KEPT,
    SESSION_GRANTS_KEPT,
    SessionGrants,
    can_be_remembered,
    derive_grant,
    grant_matches,
    remember_refusal,
)
from workflows.model import ApprovalGrant, ContentRef, GrantScope, HitlDecision, RememberDecision
from workflows.paths import path_components, path_has_prefix, render_path
from workflows.shell import ShellRefusal, parse_simple_command

NOW = datetime(2026, 11, 30, tzinfo=UTC)


def _ref() -> ContentRef:
    return ContentRef(driver="file", claim={}, sha256="0" * 64, size=20_000, preview="npm test")


def _grant(tool: str, arguments: dict[str, Any], **remember: Any) -> ApprovalGrant:
    grant = derive_grant(
        tool,
        arguments,
        RememberDecision.model_validate({"scope": "session"} | remember),
        grant_id="g1",
        session_id="s1",
        call_id="c1",
        created_at=NOW,
    )
    assert isinstance(grant, ApprovalGrant), grant
    return grant


def _runs(grant: ApprovalGrant, command: str, **arguments: Any) -> bool:
    return grant_matches(grant, "execute_command", {"command": command} | arguments)


def test_an_exact_command_matches_its_words_only() -> None:
    grant = _grant("execute_command", {"command": "npm test"})
    assert (grant.match, grant.words, grant.cwd, grant.description) == (
        "exact",
        ["npm", "test"],
        "",
        "execute_command: npm test",
    )
    assert _runs(grant, "npm test") and _runs(grant, "'npm'  \"test\"") and _runs(grant, "npm test", cwd=".")
    for command in ("npm test -u", "npm", "npm tests", "npm test; id", "npm test | sh"):
        assert not _runs(grant, command), command


def test_leading_words_match_as_a_prefix_of_a_simple_command() -> None:
    grant = _grant("execute_command", {"command": "npm test -- --watch"}, command_words=2)
    assert (grant.match, grant.words, grant.description) == ("prefix", ["npm", "test"], "execute_command: npm test ...")
    assert _runs(grant, "npm test") and _runs(grant, "npm test -- -u") and _runs(grant, "npm test 'a;b'")
    for bypass in BYPASSES:
        command = bypass.replace("git status", "npm test")
        if isinstance(parse_simple_command(command), ShellRefusal):  # (one bypass is only too long by 2 characters)
            assert not _runs(grant, command), command
    assert not _runs(grant, "npm test 'a;b'", shell=True)  # a shell reads the quote too
    assert _runs(grant, "npm test -u", shell=True)
    assert not _runs(grant, "npm test", cwd="/")  # another working directory
    assert not _runs(grant, "npm test", cwd="../x")  # an unreadable one
    assert not grant_matches(grant, "execute_command", ref_marker(_ref()))
    assert not grant_matches(grant, "execute_command", {"command": ref_marker(_ref())})
    assert not grant_matches(grant.model_copy(update={"revoked_at": NOW}), "execute_command", {"command": "npm test"})
    assert not grant_matches(grant, "write_file", {"path": "npm"})


def test_the_working_directory_is_part_of_a_command_grant() -> None:
    grant = _grant("execute_command", {"command": "make", "cwd": "./pkg//a/"})
    assert (grant.cwd, grant.description) == ("pkg/a", "execute_command: make (in pkg/a)")
    assert _runs(grant, "make", cwd="pkg/a") and not _runs(grant, "make") and not _runs(grant, "make", cwd="pkg")


def test_a_path_prefix_covers_the_paths_under_it() -> None:
    grant = _grant("write_file", {"path": "src/app/main.py", "content": "x"}, path_prefix="src/")
    assert (grant.match, grant.words, grant.description) == ("prefix", ["src"], "write_file: src/...")

    def writes(path: str) -> bool:
        return grant_matches(grant, "write_file", {"path": path, "content": "y"})

    assert writes("src/a.py") and writes("./src//b/c.py")
    for path in ("src/../etc/passwd", "srcx/a.py", "/src/a.py", "~/src", "src\\a", "a/src/b", ""):
        assert not writes(path), path
    exact = _grant("create_directory", {"path": "/tmp/build"})
    assert (exact.words, exact.description) == (["/", "tmp", "build"], "create_directory: /tmp/build")
    assert grant_matches(exact, "create_directory", {"path": "/tmp/build/"})
    assert not grant_matches(exact, "create_directory", {"path": "/tmp/build/x"})


@pytest.mark.parametrize(
    ("tool", "arguments", "remember", "why"),
    [
        ("read_file", {"path": "a"}, {}, "cannot be remembered"),
        ("execute_command", {"command": "make && make install"}, {}, "chains commands"),
        ("execute_command", {"command": "make 'x'", "shell": True}, {}, "shell metacharacters"),
        ("execute_command", {"command": "make", "cwd": "../up"}, {}, "working directory"),
        ("execute_command", {"command": "make"}, {"path_prefix": "src"}, "path_prefix is for file tools"),
        ("write_file", {"path": "a/b"}, {"command_words": 1}, "command_words is for commands"),
        ("write_file", {"path": "../a"}, {}, "cannot be read for sure"),
        ("write_file", {"path": "src/a"}, {"path_prefix": "lib"}, "does not contain"),
        ("write_file", {"path": "/a"}, {"path_prefix": "/"}, "not a directory that can be remembered"),
        ("write_file", {"path": "a"}, {"path_prefix": "."}, "not a directory that can be remembered"),
        ("execute_command", {"command": ref_marker(_ref())}, {}, "not text"),
    ],
)
def test_what_cannot_be_remembered_says_why(
    tool: str, arguments: dict[str, Any], remember: dict[str, Any], why: str
) -> None:
    refusal = remember_refusal(tool, arguments, RememberDecision.model_validate({"scope": "session"} | remember))
    assert refusal is not None and why in refusal, refusal
    assert remember_refusal(tool, arguments, RememberDecision()) is None  # once: nothing to remember
    assert remember_refusal(tool, arguments, None) is None


def test_a_decision_to_remember_is_well_formed() -> None:
    with pytest.raises(ValidationError, match="only an 'approve' decision"):
        HitlDecision.model_validate(
            {"call_id": "c", "decision": "edit", "modified_arguments": {}, "remember": {"scope": "session"}}
        )
    with pytest.raises(ValidationError, match="project exactly when"):
        RememberDecision(scope=GrantScope.PROJECT)
    with pytest.raises(ValidationError, match="project exactly when"):
        RememberDecision(scope=GrantScope.SESSION, project="p")
    with pytest.raises(ValidationError):
        RememberDecision(scope=GrantScope.PROJECT, project="has space")
    assert HitlDecision.model_validate({"call_id": "c", "decision": "reject", "remember": {"scope": "once"}})


def test_a_session_keeps_its_grants_bounded_and_recognises_revocations() -> None:
    grants = SessionGrants([])
    first = _grant("execute_command", {"command": "make"})
    assert grants.add(first) is first
    assert grants.add(first.model_copy(update={"grant_id": "g2"})) is first  # the same pattern is kept once
    for index in range(SESSION_GRANTS_KEPT + 5):
        grants.add(
            _grant("execute_command", {"command": f"make t{index}"}).model_copy(update={"grant_id": f"n{index}"})
        )
    assert len(grants.active()) == SESSION_GRANTS_KEPT and grants.get("g1") is None  # the oldest went first
    revoked = grants.revoke("n104", NOW, "no")
    assert revoked is not None and revoked.revoked_reason == "no" and grants.revoke("n104", NOW, None) is None
    assert grants.get("n104") == revoked and grants.match("execute_command", {"command": "make t104"}) is None
    carried = SessionGrants(grants.carried())
    assert carried.active() == grants.active() and carried.get("n104") == revoked
    for index in range(REVOKED_KEPT + 3):
        grants.revoke(f"n{index + 10}", NOW, None)
    assert len(grants.carried()) == len(grants.active()) + REVOKED_KEPT


def test_only_readable_calls_of_remembered_tools_can_match() -> None:
    assert can_be_remembered("execute_command", {"command": "npm test"})
    assert not can_be_remembered("execute_command", {"command": "npm test; id"})
    assert not can_be_remembered("write_file", {"path": "../x"})
    assert not can_be_remembered("read_file", {"path": "x"})


# --- paths ---


@pytest.mark.parametrize(
    ("path", "components"),
    [
        ("src/a.py", ("src", "a.py")),
        ("./src//a.py/", ("src", "a.py")),
        ("/etc/passwd", ("/", "etc", "passwd")),
        ("//etc", ("/", "etc")),
        ("a~b/c", ("a~b", "c")),
        ("C:/proj", ("C:", "proj")),
        ("src/../x", None),
        ("..", None),
        ("~/x", None),
        ("~root", None),
        ("src\\x", None),
        ("a\x00b", None),
        ("a\nb", None),
        ("", None),
        (".", None),
        ("./", None),
        ("x" * 5000, None),
    ],
)
def test_paths_are_read_as_components_or_refused(path: str, components: tuple[str, ...] | None) -> None:
    assert path_components(path) == components
    if components is not None:
        assert path_components(render_path(components)) == components


def test_a_path_prefix_is_a_whole_component() -> None:
    assert path_has_prefix("src/a", "src") and path_has_prefix("src", "src/")
    assert not path_has_prefix("src2/a", "src") and not path_has_prefix("src/../a", "src")
    assert not path_has_prefix("/src/a", "src") and not path_has_prefix("src/a", "../src")
