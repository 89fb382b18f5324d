"""One approval policy: wildcard patterns, argument predicates, first match wins."""

from workflows.model import (
    ApprovalPolicy,
    ApprovalRule,
    ArgumentPredicate,
)
from workflows.policy import DEFAULT_APPROVAL_POLICY, evaluate


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
    assert not safe.requires_approval and safe.reason == "read-only git"
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
    assert not evaluate(policy, "execute_command", {"timeout": "soon"}).requires_approval
    assert not evaluate(
        policy.model_copy(update={"enabled": False}), "execute_command", {"timeout": 300}
    ).requires_approval


def test_pattern_is_a_full_match() -> None:
    policy = ApprovalPolicy(rules=[ApprovalRule(pattern="write", requires_approval=True)])
    assert not evaluate(policy, "write_file", {}).requires_approval
