"""The activities through which a session reads and writes its project's remembered decisions.

A project's grants live in its entity workflow (workflows/project_grants.py says why there); a session reaches it
only through these activities, so what it read is recorded in its own history and replays identically. The entity
runs on the task queue of the session that first wrote to it (the worker's own queue).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from temporalio import activity
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowQueryRejectedError,
    WorkflowUpdateFailedError,
)
from temporalio.common import QueryRejectCondition, WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from workflows.model import (
    PROJECT_GRANTS_ACTIVITY,
    REMEMBER_PROJECT_GRANT_ACTIVITY,
    ApprovalGrant,
    ProjectGrants,
    ProjectGrantsRequest,
    project_grants_workflow_id,
)
from workflows.project_grants import ProjectGrantsWorkflow


class GrantActivities:
    """Project grants for sessions, over the worker's Temporal client.

    Args:
        client: A client with the runtime's data converter.
    """

    def __init__(self, client: Client) -> None:
        self._client = client

    def all(self) -> list[Callable[..., Awaitable[Any]]]:
        """Every activity of this class, to register on a worker."""
        return [self.project_grants, self.remember_project_grant]

    @activity.defn(name=PROJECT_GRANTS_ACTIVITY)
    async def project_grants(self, request: ProjectGrantsRequest) -> ProjectGrants:
        """The project's grants; none when nothing was ever remembered for it, or its workflow was closed (an
        operator terminated it: its grants no longer hold)."""
        handle = self._client.get_workflow_handle_for(
            ProjectGrantsWorkflow.run, project_grants_workflow_id(request.project)
        )
        try:
            return await handle.query(ProjectGrantsWorkflow.grants, reject_condition=QueryRejectCondition.NOT_OPEN)
        except WorkflowQueryRejectedError:
            return ProjectGrants(project=request.project)
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                return ProjectGrants(project=request.project)
            raise

    @activity.defn(name=REMEMBER_PROJECT_GRANT_ACTIVITY)
    async def remember_project_grant(self, grant: ApprovalGrant) -> ApprovalGrant:
        """Add a grant to its project (starting the project's workflow if needed); returns the grant kept."""
        assert grant.project is not None  # a project grant always names its project (RememberDecision)
        start = WithStartWorkflowOperation(
            ProjectGrantsWorkflow.run,
            ProjectGrants(project=grant.project),
            id=project_grants_workflow_id(grant.project),
            task_queue=activity.info().task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
        try:
            return await self._client.execute_update_with_start_workflow(
                ProjectGrantsWorkflow.add_grant, grant, start_workflow_operation=start
            )
        except WorkflowUpdateFailedError as err:
            # Refused by the validator: retrying cannot help.
            raise ApplicationError(str(err.cause or err), type="GrantRefused", non_retryable=True) from err
