"""The one approval policy: which tool calls wait for a human, and for how long.

The original had two policy systems that could disagree (tool-name wildcards vs. regexes that were never
consulted for tools). Here there is one: ordered rules of a tool-name wildcard (full match) plus optional
argument predicates, first match wins, else the default. It is pure and serializable, fixed into each session's
input when the session starts, and evaluated only inside the workflow.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any

from workflows.model import (
    ApprovalPolicy,
    ApprovalRequirement,
    ApprovalRule,
    ArgumentPredicate,
)

DEFAULT_APPROVAL_POLICY = ApprovalPolicy(
    rules=[
        ApprovalRule(pattern="write_file", requires_approval=True, reason="Writing a file requires user approval"),
        ApprovalRule(
            pattern="create_directory", requires_approval=True, reason="Creating a directory requires user approval"
        ),
        ApprovalRule(
            pattern="execute_command", requires_approval=True, reason="Running a command requires user approval"
        ),
        ApprovalRule(pattern="read_file", requires_approval=False, reason="Reading is safe"),
        ApprovalRule(pattern="list_files", requires_approval=False, reason="Listing is safe"),
        ApprovalRule(pattern="search_in_code", requires_approval=False, reason="Searching is safe"),
    ],
    default_requires_approval=False,
)


def evaluate(policy: ApprovalPolicy, tool_name: str, arguments: dict[str, Any]) -> ApprovalRequirement:
    """Decide whether a tool call needs approval: the first rule whose pattern and predicates match wins."""
    if not policy.enabled:
        return ApprovalRequirement(requires_approval=False, reason="Approval policy disabled")
    for rule in policy.rules:
        if _rule_matches(rule, tool_name, arguments):
            return ApprovalRequirement(
                requires_approval=rule.requires_approval,
                reason=rule.reason or f"Policy rule '{rule.pattern}'",
                timeout_seconds=rule.timeout_seconds or policy.default_timeout_seconds,
            )
    return ApprovalRequirement(
        requires_approval=policy.default_requires_approval,
        reason="Default policy",
        timeout_seconds=policy.default_timeout_seconds,
    )


def rule_names_tool(rule: ApprovalRule, tool_name: str) -> bool:
    """Whether a rule's pattern covers a tool name (used by the startup self-check)."""
    return fnmatch.fnmatchcase(tool_name, rule.pattern)


def _rule_matches(rule: ApprovalRule, tool_name: str, arguments: dict[str, Any]) -> bool:
    return rule_names_tool(rule, tool_name) and all(_holds(p, arguments) for p in rule.when)


def _holds(predicate: ArgumentPredicate, arguments: dict[str, Any]) -> bool:
    if predicate.argument not in arguments:
        return False
    actual = arguments[predicate.argument]
    expected = predicate.value
    match predicate.op:
        case "equals":
            return bool(actual == expected)
        case "contains":
            return str(expected) in str(actual)
        case "startswith":
            return str(actual).startswith(str(expected))
        case "matches":
            return re.fullmatch(str(expected), str(actual)) is not None
        case "gt" | "lt":
            try:
                a, e = float(actual), float(expected)
            except (TypeError, ValueError):
                return False
            return a > e if predicate.op == "gt" else a < e
    return False
