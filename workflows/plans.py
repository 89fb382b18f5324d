"""Plans (spec §3 "Plan approval", bug B7): validating a proposed plan and ordering its subtasks.

A plan comes from the architect's `create_plan` call. It is checked here before anyone is asked to approve it:
dependency indices in range, no cycles, and every subtask assigned to an agent this session has and that may
execute subtasks. Execution order is a stable topological order (lowest index first among the ready ones), and a
failed subtask blocks everything that depends on it, directly or not.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, ValidationError

from workflows.model import (
    AgentType,
    Plan,
    Subtask,
    SubtaskStatus,
)

# Agents that may be given a subtask (the original's create_plan schema).
SUBTASK_AGENTS = frozenset({AgentType.CODER, AgentType.DEBUG, AgentType.ASK})


class PlanError(ValueError):
    """The proposed plan cannot be executed; the message tells the model what to fix."""


class _ProposedSubtask(BaseModel):
    title: str = Field(min_length=1)
    description: str = Field(min_length=1)
    agent: AgentType
    estimated_time_minutes: int = Field(ge=1)
    dependencies: list[int] = Field(default_factory=list)


class _ProposedPlan(BaseModel):
    title: str = Field(min_length=1)
    description: str = Field(min_length=1)
    subtasks: list[_ProposedSubtask] = Field(min_length=1)


def parse_plan(
    arguments: dict[str, Any], *, plan_id: str, available: frozenset[AgentType], call_id: str, created_at: Any
) -> Plan:
    """Turn `create_plan` arguments into a Plan, or raise PlanError naming every problem."""
    try:
        proposed = _ProposedPlan.model_validate(arguments)
    except ValidationError as err:
        details = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors())
        raise PlanError(f"invalid plan: {details}") from None
    count = len(proposed.subtasks)
    problems: list[str] = []
    for index, subtask in enumerate(proposed.subtasks):
        if subtask.agent not in SUBTASK_AGENTS or subtask.agent not in available:
            problems.append(f"subtask {index}: agent '{subtask.agent.value}' cannot execute subtasks here")
        for dependency in subtask.dependencies:
            if not 0 <= dependency < count or dependency == index:
                problems.append(f"subtask {index}: dependency {dependency} is not another subtask's index")
    if not problems and _has_cycle([s.dependencies for s in proposed.subtasks]):
        problems.append("the dependencies form a cycle")
    if problems:
        raise PlanError("invalid plan: " + "; ".join(problems))
    return Plan(
        plan_id=plan_id,
        title=proposed.title,
        description=proposed.description,
        call_id=call_id,
        approval_request_id=f"plan-approval-{plan_id}",
        created_at=created_at,
        subtasks=[
            Subtask(
                index=index,
                title=s.title,
                description=s.description,
                agent=s.agent,
                estimated_time_minutes=s.estimated_time_minutes,
                dependencies=sorted(set(s.dependencies)),
            )
            for index, s in enumerate(proposed.subtasks)
        ],
    )


def _has_cycle(dependencies: list[list[int]]) -> bool:
    return len(execution_order(dependencies)) < len(dependencies)


def execution_order(dependencies: list[list[int]]) -> list[int]:
    """A stable topological order: among the subtasks whose dependencies are done, the lowest index goes first."""
    done: set[int] = set()
    order: list[int] = []
    while True:
        ready = [i for i, deps in enumerate(dependencies) if i not in done and all(d in done for d in deps)]
        if not ready:
            return order
        done.add(ready[0])
        order.append(ready[0])


def next_subtask(plan: Plan) -> Subtask | None:
    """The next pending subtask in execution order; subtasks behind a failed one are marked blocked first."""
    block_dependants(plan)
    by_index = {s.index: s for s in plan.subtasks}
    for index in execution_order([s.dependencies for s in plan.subtasks]):
        if by_index[index].status is SubtaskStatus.PENDING:
            return by_index[index]
    return None


def block_dependants(plan: Plan) -> None:
    """Mark every pending subtask that (transitively) depends on a failed or blocked one as blocked."""
    changed = True
    while changed:
        changed = False
        stuck = {s.index for s in plan.subtasks if s.status in (SubtaskStatus.FAILED, SubtaskStatus.BLOCKED)}
        for subtask in plan.subtasks:
            if subtask.status is SubtaskStatus.PENDING and stuck.intersection(subtask.dependencies):
                subtask.status = SubtaskStatus.BLOCKED
                subtask.error = "blocked: a subtask it depends on did not finish"
                changed = True


def summary(plan: Plan) -> dict[str, Any]:
    """The original's `plan_summary` of a `plan_approval_required` chunk."""
    return {
        "title": plan.title,
        "goal": plan.title,
        "description": plan.description,
        "subtasks_count": len(plan.subtasks),
        "total_estimated_time": sum(s.estimated_time_minutes for s in plan.subtasks),
        "subtasks": [
            {
                "index": s.index,
                "title": s.title,
                "agent": s.agent.value,
                "estimated_time_minutes": s.estimated_time_minutes,
                "dependencies": s.dependencies,
                "status": s.status.value,
            }
            for s in plan.subtasks
        ],
    }


def subtask_instruction(plan: Plan, subtask: Subtask) -> str:
    """What the subtask's agent is asked to do (a user-role message in the history, named `plan`)."""
    done = [s for s in plan.subtasks if s.status is SubtaskStatus.DONE]
    context = "".join(f"\n- Done: {s.title}: {s.result or ''}"[:400] for s in done)
    return (
        f"Plan '{plan.title}', subtask {subtask.index + 1} of {len(plan.subtasks)}: {subtask.title}\n"
        f"{subtask.description}{context}\n"
        "Do this subtask only, then finish with attempt_completion."
    )
