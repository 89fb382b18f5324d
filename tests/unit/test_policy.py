"""One approval policy: wildcard patterns, argument predicates read as shell words and paths, deny rules first,
then the first match, failing closed."""

from __future__ import annotations

from typing import Any

import pytest

from settings import Settings
from tests.support import readme_approval_rules
from tests.unit.test_shell import BYPASSES
from workflows.content import ref_marker
from workflows.model import (
    ApprovalPolicy,
    ApprovalRule,
    ArgumentPredicate,
    ContentRef,
)
from workflows.policy import DEFAULT_APPROVAL_POLICY, evaluate, evaluate_first_match
from workflows.selfcheck import find_problems


def test_default_policy_matches_the_original() -> None:
    for tool in ("write_file", "create_directory", "execute_command"):
        assert evaluate(DEFAULT_APPROVAL_POLICY, tool, {}).requires_approval, tool
    for tool in ("read_file", "list_files", "search_in_code", "echo", "calculator"):
        assert not evaluate(DEFAULT_APPROVAL_POLICY, tool, {}).requires_approval, tool


def test_first_match_wins_and_predicates_narrow_a_rule() -> None:
    policy = ApprovalPolicy(
        rules=[
            ApprovalRule(
                pattern="execute_command",
                requires_approval=False,
                reason="read-only git",
                when=[ArgumentPredicate(argument="command", op="matches", value=r"git (status|log).*")],
            ),
            ApprovalRule(pattern="execute_*", requires_approval=True, reason="commands", timeout_seconds=30),
        ],
        default_timeout_seconds=300,
    )
    safe = evaluate(policy, "execute_command", {"command": "git status"})
    assert not safe.requires_approval and safe.reason == "read-only git" and safe.conditional
    risky = evaluate(policy, "execute_command", {"command": "rm -rf /"})
    assert risky.requires_approval and risky.timeout_seconds == 30
    assert evaluate(policy, "execute_command", {}).requires_approval  # predicate on a missing argument fails
    other = evaluate(policy, "write_file", {})
    assert not other.requires_approval and other.timeout_seconds == 300


def test_numeric_predicates_and_disabled_policy() -> None:
    rule = ApprovalRule(
        pattern="execute_command",
        requires_approval=True,
        when=[ArgumentPredicate(argument="timeout", op="gt", value=120)],
    )
    policy = ApprovalPolicy(rules=[rule])
    assert evaluate(policy, "execute_command", {"timeout": 300}).requires_approval
    assert not evaluate(policy, "execute_command", {"timeout": 60}).requires_approval
    # A deny rule's condition that cannot be decided counts as matching: asking is the safe side.
    assert evaluate(policy, "execute_command", {"timeout": "soon"}).requires_approval
    assert not evaluate(
        policy.model_copy(update={"enabled": False}), "execute_command", {"timeout": 300}
    ).requires_approval


def test_pattern_is_a_full_match() -> None:
    policy = ApprovalPolicy(rules=[ApprovalRule(pattern="write", requires_approval=True)])
    assert not evaluate(policy, "write_file", {}).requires_approval


# --- shell-aware rules, deny rules, failing closed (issue 14) ---

README_POLICY = ApprovalPolicy(rules=[ApprovalRule.model_validate(r) for r in readme_approval_rules()])


def _settings_policy(rules: list[dict[str, Any]]) -> ApprovalPolicy:
    """The policy a session gets from `AGENT_RUNTIME__APPROVAL__RULES` (the built-in rules follow the configured)."""
    return Settings(approval={"rules": rules}).approval_policy()


@pytest.mark.parametrize("command", BYPASSES)
def test_no_bypass_gets_past_the_readme_rule(command: str) -> None:
    """Every command the shell reader refuses needs approval under the README's example, as configured."""
    verdict = evaluate(_settings_policy(readme_approval_rules()), "execute_command", {"command": command})
    assert verdict.requires_approval, command
    assert not evaluate(README_POLICY, "execute_command", {"command": command}).conditional


@pytest.mark.parametrize(
    "command", ["git status", "git status --short", "'git' \"status\"", "git  status -- 'a;b'", "git status -uno"]
)
def test_the_readme_rule_allows_simple_git_status(command: str) -> None:
    verdict = evaluate(_settings_policy(readme_approval_rules()), "execute_command", {"command": command})
    assert (verdict.requires_approval, verdict.conditional, verdict.rule_index) == (False, True, 0)


def test_a_command_no_rule_approves_falls_to_the_built_in_rules() -> None:
    """The README's example says nothing of other commands: they ask (the built-in rules follow the configured)."""
    policy = _settings_policy(readme_approval_rules())
    assert evaluate(policy, "execute_command", {"command": "rm -rf ~"}).requires_approval
    assert evaluate(policy, "write_file", {"path": "a", "content": "x"}).timeout_seconds == 3600
    assert not evaluate(policy, "read_file", {"path": "a"}).requires_approval


def test_shell_true_refuses_every_metacharacter() -> None:
    for command in ("git status 'a;b'", 'git status "x"', "git status a\\ b", "git status %PATH%", "git status ^&"):
        assert not evaluate(README_POLICY, "execute_command", {"command": command, "shell": True}).conditional
    assert evaluate(README_POLICY, "execute_command", {"command": "git status", "shell": True}).conditional
    assert evaluate(README_POLICY, "execute_command", {"command": "git status 'a;b'", "shell": False}).conditional
    for flag in ("yes", 1, None, {"x": 1}):
        # Anything but an absent or false flag counts as a shell (None is the tool's default: no shell).
        expected = flag is None
        verdict = evaluate(README_POLICY, "execute_command", {"command": "git status 'a;b'", "shell": flag})
        assert verdict.conditional is expected, flag


def test_allow_rules_fail_closed() -> None:
    def allowed(op: str, value: Any, arguments: dict[str, Any], argument: str = "command") -> bool:
        rule = ApprovalRule(
            pattern="*", requires_approval=False, when=[ArgumentPredicate(argument=argument, op=op, value=value)]
        )
        policy = ApprovalPolicy(rules=[rule], default_requires_approval=True)
        return not evaluate(policy, "execute_command", arguments).requires_approval

    marker = ref_marker(ContentRef(driver="file", claim={}, sha256="0" * 64, size=20_000, preview="git status"))
    assert not allowed("startswith", "git status", {})  # missing argument
    assert not allowed("startswith", "git status", {"command": marker})  # stored by reference
    assert not allowed("startswith", "git status", marker)  # the whole arguments stored by reference
    assert not allowed("equals", "git status", {"command": ["git", "status"]})  # not text
    assert not allowed("startswith", 7, {"command": "7"})  # the rule's value is not text
    assert not allowed("matches", "git (", {"command": "git ("})  # not a regular expression
    assert not allowed("gt", 5, {"command": "10"})  # a command is no number
    assert not allowed("lt", 100, {"timeout": "5"}, argument="timeout")  # text is no number either
    assert not allowed("equals", True, {"flag": 1}, argument="flag")  # JSON equality: true is not 1
    assert not allowed("contains", "x", {"note": {"x": marker}}, argument="note")  # a reference inside
    bad = ArgumentPredicate.model_construct(argument="command", op="resembles", value="git")
    unknown = ApprovalPolicy(
        rules=[ApprovalRule(pattern="*", requires_approval=False, when=[bad])], default_requires_approval=True
    )
    assert evaluate(unknown, "execute_command", {"command": "git"}).requires_approval  # an unknown operator
    assert allowed("lt", 100, {"timeout": 5}, argument="timeout")
    assert allowed("equals", "git status", {"command": "git  'status'"})
    assert allowed("contains", "--dry-run", {"command": "npm publish --dry-run"})
    assert not allowed("contains", "--dry-run", {"command": "npm publish --dry-runx"})
    assert allowed("matches", r"git (status|log)( .*)?", {"command": "git log -1"})
    assert not allowed("matches", r"git (status|log).*", {"command": "git log; id"})


def test_deny_rules_win_wherever_they_stand_and_read_broadly() -> None:
    policy = ApprovalPolicy(
        rules=[
            ApprovalRule(pattern="execute_command", requires_approval=False, when=[_command("startswith", "git")]),
            ApprovalRule(
                pattern="execute_*", requires_approval=True, reason="no push", when=[_command("startswith", "git push")]
            ),
        ]
    )
    for command in ("git push", "'git' push", "git -C . push", "sudo git push -f", "/usr/bin/git push", "git push;"):
        verdict = evaluate(policy, "execute_command", {"command": command})
        assert (verdict.requires_approval, verdict.deny_rule, verdict.reason) == (True, True, "no push"), command
    assert not evaluate(policy, "execute_command", {"command": "git log -1"}).requires_approval
    # Broad on purpose: its words in order anywhere. Asking once too often costs a click.
    assert evaluate(policy, "execute_command", {"command": "git log --grep push"}).requires_approval
    # An unconditional asking rule keeps first-match order (it is a default, not a deny rule).
    ordered = ApprovalPolicy(
        rules=[
            ApprovalRule(pattern="execute_command", requires_approval=False, when=[_command("startswith", "ls")]),
            ApprovalRule(pattern="*", requires_approval=True),
        ]
    )
    assert not evaluate(ordered, "execute_command", {"command": "ls -la"}).requires_approval
    verdict = evaluate(ordered, "execute_command", {"command": "rm x"})
    assert (verdict.requires_approval, verdict.deny_rule) == (True, False)


def test_path_conditions_compare_components() -> None:
    def allowed(op: str, value: str, path: str) -> bool:
        rule = ApprovalRule(
            pattern="write_file", requires_approval=False, when=[ArgumentPredicate(argument="path", op=op, value=value)]
        )
        policy = ApprovalPolicy(rules=[rule], default_requires_approval=True)
        return not evaluate(policy, "write_file", {"path": path, "content": "x"}).requires_approval

    assert allowed("startswith", "src/", "src/a.py") and allowed("startswith", "src", "./src//b/c.py")
    for path in ("src/../../etc/passwd", "srcx/a.py", "/src/a.py", "~/src/a", "src\\..\\x", "src/a\x00b"):
        assert not allowed("startswith", "src/", path), path
    assert allowed("equals", "a/b.py", "./a//b.py") and not allowed("equals", "a/b.py", "a/b.py/../b.py")
    deny = ApprovalPolicy(
        rules=[
            ApprovalRule(pattern="write_file", requires_approval=False),
            ApprovalRule(
                pattern="write_file",
                requires_approval=True,
                when=[ArgumentPredicate(argument="path", op="startswith", value=".git")],
            ),
        ]
    )
    for path in (".git/config", "./.git/hooks/x", ".github/x", "a/../.git/config"):
        assert evaluate(deny, "write_file", {"path": path}).requires_approval, path
    assert not evaluate(deny, "write_file", {"path": "src/.git"}).requires_approval


def test_the_first_match_reading_is_kept_for_runs_that_replay_it() -> None:
    """Sessions whose run already evaluated calls the old way must replay the same verdicts (patch safe-approvals)."""
    assert not evaluate_first_match(README_POLICY, "execute_command", {"command": "git status; id"}).requires_approval
    assert evaluate(_settings_policy(readme_approval_rules()), "execute_command", {"command": "git status; id"})
    rule = ApprovalRule(
        pattern="execute_command", requires_approval=True, when=[ArgumentPredicate(argument="t", op="gt", value=1)]
    )
    assert not evaluate_first_match(ApprovalPolicy(rules=[rule]), "execute_command", {"t": "x"}).requires_approval


def test_the_self_check_names_conditions_that_can_never_hold() -> None:
    policy = ApprovalPolicy(
        rules=[
            ApprovalRule(pattern="execute_command", requires_approval=False, when=[_command("matches", "git (")]),
            ApprovalRule(
                pattern="execute_command",
                requires_approval=True,
                when=[ArgumentPredicate(argument="timeout", op="gt", value="10")],
            ),
        ]
    )
    problems = find_problems(policy)
    assert any("is not a regular expression" in p for p in problems)
    assert any("compares with a non-number" in p for p in problems)
    assert find_problems(_settings_policy(readme_approval_rules())) == []


def _command(op: str, value: str) -> ArgumentPredicate:
    return ArgumentPredicate.model_validate({"argument": "command", "op": op, "value": value})


def test_a_verdict_says_when_to_remind_escalate_and_expire() -> None:
    """A rule's own times win; each time it leaves out comes from the policy's defaults."""
    policy = ApprovalPolicy(
        rules=[
            ApprovalRule(
                pattern="execute_command", requires_approval=True, remind_after_seconds=60, timeout_seconds=600
            ),
            ApprovalRule(pattern="write_file", requires_approval=True),
        ],
        default_remind_after_seconds=900,
        default_escalate_after_seconds=1800,
        default_timeout_seconds=3600,
    )
    command = evaluate(policy, "execute_command", {"command": "ls"})
    assert (command.remind_after_seconds, command.escalate_after_seconds, command.timeout_seconds) == (60, 1800, 600)
    write = evaluate(policy, "write_file", {"path": "a"})
    assert (write.remind_after_seconds, write.escalate_after_seconds, write.timeout_seconds) == (900, 1800, 3600)
    default = evaluate(policy.model_copy(update={"default_requires_approval": True}), "some_tool", {})
    assert (default.remind_after_seconds, default.escalate_after_seconds) == (900, 1800)
    legacy = evaluate_first_match(policy, "execute_command", {"command": "ls"})
    assert (legacy.remind_after_seconds, legacy.escalate_after_seconds) == (60, 1800)


def test_a_rule_whose_reminder_comes_after_its_expiry_is_reported() -> None:
    with pytest.raises(ValueError, match=r"escalate after \(60 s\) must be shorter than expire after \(30 s\)"):
        ApprovalRule(pattern="write_file", requires_approval=True, escalate_after_seconds=60, timeout_seconds=30)
    # Out of order only with the policy's defaults: the worker's self-check refuses it.
    policy = ApprovalPolicy(
        rules=[ApprovalRule(pattern="write_file", requires_approval=True, timeout_seconds=300)],
        default_remind_after_seconds=900,
    )
    assert find_problems(policy) == [
        "approval rule 'write_file': remind after (900 s) must be shorter than expire after (300 s) "
        "(the rule's own times, else the policy's defaults)"
    ]
