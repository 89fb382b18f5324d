"""Plan validation and ordering (pure)."""

from datetime import UTC, datetime
from typing import Any

import pytest

from workflows.agents import available_agents
from workflows.model import (
    AgentType,
    SubtaskStatus,
)
from workflows.plans import PlanError, block_dependants, execution_order, next_subtask, parse_plan, summary

AT = datetime(2026, 1, 1, tzinfo=UTC)


def _subtask(title: str, agent: str = "coder", deps: list[int] | None = None) -> dict[str, Any]:
    return {
        "title": title,
        "description": f"do {title}",
        "agent": agent,
        "estimated_time_minutes": 5,
        "dependencies": deps or [],
    }


def _parse(*subtasks: dict[str, Any], multi: bool = True):  # type: ignore[no-untyped-def]
    args = {"title": "T", "description": "D", "subtasks": list(subtasks)}
    return parse_plan(args, plan_id="p1", available=available_agents(multi), call_id="c1", created_at=AT)


def test_valid_plan_and_summary() -> None:
    plan = _parse(_subtask("a"), _subtask("b", "debug", [0]), _subtask("c", "ask", [0, 1]))
    assert plan.approval_request_id == "plan-approval-p1"
    assert [s.dependencies for s in plan.subtasks] == [[], [0], [0, 1]]
    assert summary(plan)["total_estimated_time"] == 15 and summary(plan)["subtasks_count"] == 3


@pytest.mark.parametrize(
    ("subtasks", "message"),
    [
        ([_subtask("a", deps=[3])], "dependency 3"),
        ([_subtask("a", deps=[0])], "dependency 0"),
        ([_subtask("a", deps=[1]), _subtask("b", deps=[0])], "cycle"),
        ([_subtask("a", "architect")], "agent 'architect'"),
        ([], "subtasks"),
        ([{"title": "a"}], "estimated_time_minutes"),
    ],
)
def test_invalid_plans_are_refused_with_the_reason(subtasks: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(PlanError, match=message):
        _parse(*subtasks)


def test_single_agent_sessions_cannot_plan_for_specialists() -> None:
    with pytest.raises(PlanError, match="agent 'coder'"):
        _parse(_subtask("a"), multi=False)


def test_order_is_topological_and_stable() -> None:
    assert execution_order([[1], [], [0, 1], []]) == [1, 0, 2, 3]
    assert execution_order([[1], [0]]) == []


def test_failure_blocks_transitive_dependants_only() -> None:
    plan = _parse(_subtask("a"), _subtask("b", deps=[0]), _subtask("c", deps=[1]), _subtask("d"))
    plan.subtasks[0].status = SubtaskStatus.FAILED
    block_dependants(plan)
    assert [s.status for s in plan.subtasks] == [
        SubtaskStatus.FAILED,
        SubtaskStatus.BLOCKED,
        SubtaskStatus.BLOCKED,
        SubtaskStatus.PENDING,
    ]
    nxt = next_subtask(plan)
    assert nxt is not None and nxt.index == 3 and nxt.agent is AgentType.CODER
