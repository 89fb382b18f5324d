"""Agents, prompts, tools and policy agree (bug B5); permission checks and the safe calculator."""

import pytest

from workflows.agents import AGENTS, check_tool_call
from workflows.calculator import CalculatorError, calculate
from workflows.model import (
    AgentType,
    ApprovalPolicy,
    ApprovalRule,
    ToolCall,
)
from workflows.policy import DEFAULT_APPROVAL_POLICY
from workflows.selfcheck import InconsistentCatalogueError, check_consistency, find_problems
from workflows.tools import CATALOGUE


def test_shipped_configuration_is_consistent() -> None:
    assert find_problems(DEFAULT_APPROVAL_POLICY) == []
    assert {"attempt_completion", "ask_followup_question"} <= set(CATALOGUE)


def test_a_policy_naming_a_missing_tool_is_caught() -> None:
    policy = ApprovalPolicy(rules=[ApprovalRule(pattern="search_files", requires_approval=False)])
    with pytest.raises(InconsistentCatalogueError, match="search_files"):
        check_consistency(policy)


def _call(name: str, **arguments: object) -> ToolCall:
    return ToolCall(id="c", name=name, arguments=dict(arguments))


def test_forbidden_tools_and_paths() -> None:
    assert check_tool_call(AGENTS[AgentType.CODER], _call("write_file", path="main.py", content="x")) is None
    assert "cannot edit" in (check_tool_call(AGENTS[AgentType.DEBUG], _call("write_file", path="a", content="")) or "")
    architect = AGENTS[AgentType.ARCHITECT]
    assert check_tool_call(architect, _call("write_file", path="docs/plan.md", content="x")) is None
    assert "markdown" in (check_tool_call(architect, _call("write_file", path="main.py", content="x")) or "")
    assert "not allowed" in (check_tool_call(AGENTS[AgentType.CODER], _call("switch_mode", mode="ask")) or "")
    assert "Unknown tool" in (check_tool_call(AGENTS[AgentType.CODER], _call("rm_rf")) or "")
    assert "path" in (check_tool_call(AGENTS[AgentType.CODER], _call("read_file")) or "")


def test_universal_has_every_tool_but_switch_mode() -> None:
    assert set(AGENTS[AgentType.UNIVERSAL].allowed_tools) == set(CATALOGUE) - {"switch_mode"}


@pytest.mark.parametrize(("expr", "value"), [("1+2*3", 7), ("(2+3)**2", 25), ("7//2", 3), ("-4/8", -0.5)])
def test_calculator(expr: str, value: float) -> None:
    assert calculate(expr) == value


@pytest.mark.parametrize("expr", ["__import__('os').system('id')", "9**9**9", "1/0", "x", "[1]*9", "2" * 300])
def test_calculator_refuses(expr: str) -> None:
    with pytest.raises(CalculatorError):
        calculate(expr)
