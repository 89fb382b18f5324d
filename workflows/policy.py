"""The one approval policy: which tool calls wait for a human, and for how long.

The original had two policy systems that could disagree (tool-name wildcards vs. regexes that were never
consulted for tools). Here there is one: ordered rules of a tool-name wildcard (full match) plus optional
argument predicates. It is pure and serializable, fixed into each session's input when the session starts, and
evaluated only inside the workflow.

How rules combine (`evaluate`), so that deny rules win and every doubt asks a human:

1. Deny rules win wherever they stand. A deny rule is a rule with `requires_approval: true` and at least one
   condition (`when`). If any deny rule matches, the call needs approval; the first such rule gives the reason and
   the timeout, and no remembered decision may approve the call (`ApprovalRequirement.deny_rule`). Deny conditions
   are read broadly: one that cannot be decided (a value stored by reference, a command that does not parse, a
   wrong type) counts as matching (workflows/predicates.py, `asks`).
2. Otherwise the first rule whose pattern and conditions match wins: an unconditional `requires_approval: true` rule
   asks (a remembered decision may still approve the call), an allow rule approves. An allow rule's conditions
   must certainly hold (`allows`): a command must be a simple command matching word by word, a path must match
   component by component, and a value that cannot be read for sure never satisfies a condition. An allow rule with
   conditions is an automatic approval (`ApprovalRequirement.conditional`), recorded in the ledger as decided by
   "policy"; an allow rule without conditions says the tool needs no approval at all.
3. No rule matches: the policy's default.

A verdict that asks also says when the approval expires, and when a reminder and an escalation go out while it
still waits (the rule's `timeout_seconds`, `remind_after_seconds`, `escalate_after_seconds`, each falling back to the
policy's default; workflows/waits.py keeps them as durable timers).

Sessions whose run evaluated a call before this reading existed replay with `evaluate_first_match`, the reading they
ran with (workflows/waits.py, patch `safe-approvals`).
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
from workflows.predicates import allows, asks

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
    """Decide whether a tool call needs approval: deny rules first, then the first matching rule, then the default."""
    if not policy.enabled:
        return ApprovalRequirement(requires_approval=False, reason="Approval policy disabled")
    for index, rule in enumerate(policy.rules):
        if is_deny_rule(rule) and rule_names_tool(rule, tool_name):
            if all(asks(p, tool_name, arguments) for p in rule.when):
                return _verdict(policy, rule, index, deny_rule=True)
    for index, rule in enumerate(policy.rules):
        if not rule_names_tool(rule, tool_name) or is_deny_rule(rule):
            continue
        if all(allows(p, tool_name, arguments) for p in rule.when):
            return _verdict(policy, rule, index, conditional=bool(rule.when) and not rule.requires_approval)
    return _default(policy)


def evaluate_first_match(policy: ApprovalPolicy, tool_name: str, arguments: dict[str, Any]) -> ApprovalRequirement:
    """The reading before deny rules and shell-aware conditions: the first rule whose conditions match, character
    by character, wins. Only for runs that already evaluated a call this way (they must replay as they ran)."""
    if not policy.enabled:
        return ApprovalRequirement(requires_approval=False, reason="Approval policy disabled")
    for rule in policy.rules:
        if rule_names_tool(rule, tool_name) and all(_legacy_holds(p, arguments) for p in rule.when):
            return ApprovalRequirement(
                requires_approval=rule.requires_approval,
                reason=rule.reason or f"Policy rule '{rule.pattern}'",
                timeout_seconds=rule.timeout_seconds or policy.default_timeout_seconds,
                **_reminders(policy, rule),
            )
    return _default(policy)


def is_deny_rule(rule: ApprovalRule) -> bool:
    """A rule that asks for approval under conditions: it wins over every allow rule."""
    return rule.requires_approval and bool(rule.when)


def rule_names_tool(rule: ApprovalRule, tool_name: str) -> bool:
    """Whether a rule's pattern covers a tool name (used by the startup self-check)."""
    return fnmatch.fnmatchcase(tool_name, rule.pattern)


def describe_rule(rule: ApprovalRule, index: int) -> str:
    """A rule as people read it, e.g. "rule 1 'execute_command' (command startswith 'git status')"."""
    conditions = " and ".join(f"{p.argument} {p.op} {p.value!r}" for p in rule.when)
    return f"rule {index + 1} '{rule.pattern}'" + (f" ({conditions})" if conditions else "")


def _verdict(
    policy: ApprovalPolicy, rule: ApprovalRule, index: int, *, deny_rule: bool = False, conditional: bool = False
) -> ApprovalRequirement:
    return ApprovalRequirement(
        requires_approval=rule.requires_approval,
        reason=rule.reason or f"Policy rule '{rule.pattern}'",
        timeout_seconds=rule.timeout_seconds or policy.default_timeout_seconds,
        **_reminders(policy, rule),
        rule_index=index,
        deny_rule=deny_rule,
        conditional=conditional,
    )


def _default(policy: ApprovalPolicy) -> ApprovalRequirement:
    return ApprovalRequirement(
        requires_approval=policy.default_requires_approval,
        reason="Default policy",
        timeout_seconds=policy.default_timeout_seconds,
        **_reminders(policy, None),
    )


def _reminders(policy: ApprovalPolicy, rule: ApprovalRule | None) -> dict[str, float | None]:
    """A rule's reminder and escalation times, each falling back to the policy's default."""
    return {
        "remind_after_seconds": (rule and rule.remind_after_seconds) or policy.default_remind_after_seconds,
        "escalate_after_seconds": (rule and rule.escalate_after_seconds) or policy.default_escalate_after_seconds,
    }


def _legacy_holds(predicate: ArgumentPredicate, arguments: dict[str, Any]) -> bool:
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
