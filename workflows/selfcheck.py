"""The startup check that agents, prompts, the tool catalogue and the approval policy agree (bug B5).

The original's prompts told agents to call tools its registry did not define, and its policy named tools that
did not exist; both failed only at run time, in front of a user. The worker runs this check before it polls,
and refuses to start when anything disagrees.
"""

from __future__ import annotations

import re

from workflows.agents import AGENTS, tool_names_in_prompt
from workflows.model import (
    AgentType,
    ApprovalPolicy,
    ApprovalRule,
    check_approval_timers,
)
from workflows.policy import rule_names_tool
from workflows.routing import LABELS
from workflows.tools import APPROVAL_GATED_RUNTIME_TOOLS, CATALOGUE, Executor


class InconsistentCatalogueError(RuntimeError):
    """Agents, prompts, catalogue and policy disagree; the message lists every problem."""


def find_problems(policy: ApprovalPolicy) -> list[str]:
    """Every disagreement between agents, prompts, the catalogue and the policy, as readable lines."""
    problems: list[str] = []
    problems += [f"agent type '{t.value}' has no agent definition" for t in AgentType if t not in AGENTS]
    for agent in AGENTS.values():
        problems += [
            f"agent '{agent.type.value}' allows tool '{name}', which the catalogue does not define"
            for name in agent.allowed_tools
            if name not in CATALOGUE
        ]
        problems += [
            f"the {agent.type.value} prompt mentions tool '{name}', which the agent may not call"
            for name in sorted(tool_names_in_prompt(agent.prompt))
            if name not in agent.allowed_tools
        ]
    gated = [t.name for t in CATALOGUE.values() if t.executor is Executor.IDE or t.name in APPROVAL_GATED_RUNTIME_TOOLS]
    problems += [
        f"approval rule '{rule.pattern}' matches no tool that can wait for approval"
        for rule in policy.rules
        if not any(rule_names_tool(rule, name) for name in gated)
    ]
    problems += [
        f"approval rule '{rule.pattern}': {problem}" for rule in policy.rules for problem in _condition_problems(rule)
    ]
    problems += [
        f"approval rule '{rule.pattern}': {problem} (the rule's own times, else the policy's defaults)"
        for rule in policy.rules
        if rule.requires_approval
        for problem in _timer_problems(policy, rule)
    ]
    switch_modes = CATALOGUE["switch_mode"].spec.parameters["properties"]["mode"]["enum"]
    problems += [
        f"switch_mode offers unknown agent '{m}'" for m in switch_modes if m not in AgentType.__members__.values()
    ]
    problems += [
        f"routing label '{label}' maps to an undefined agent" for label, a in LABELS.items() if a not in AGENTS
    ]
    return problems


def _condition_problems(rule: ApprovalRule) -> list[str]:
    """Conditions that could never hold: an allow rule with one would never approve anything (a deny rule with one
    would ask for everything its pattern names)."""
    problems = []
    for predicate in rule.when:
        if predicate.op == "matches":
            try:
                re.compile(str(predicate.value))
            except re.error as err:
                problems.append(
                    f"'{predicate.argument} matches {predicate.value!r}' is not a regular expression: {err}"
                )
        elif predicate.op in ("gt", "lt") and (
            isinstance(predicate.value, bool) or not isinstance(predicate.value, int | float)
        ):
            problems.append(f"'{predicate.argument} {predicate.op} {predicate.value!r}' compares with a non-number")
    return problems


def _timer_problems(policy: ApprovalPolicy, rule: ApprovalRule) -> list[str]:
    """A reminder or an escalation that would come after the expiry (or out of order) never does what it says."""
    try:
        check_approval_timers(
            rule.remind_after_seconds or policy.default_remind_after_seconds,
            rule.escalate_after_seconds or policy.default_escalate_after_seconds,
            rule.timeout_seconds or policy.default_timeout_seconds,
        )
    except ValueError as err:
        return [str(err)]
    return []


def check_consistency(policy: ApprovalPolicy) -> None:
    """Raise InconsistentCatalogueError listing every problem, or return quietly."""
    problems = find_problems(policy)
    if problems:
        raise InconsistentCatalogueError("agents, prompts, tools and policy disagree:\n- " + "\n- ".join(problems))
