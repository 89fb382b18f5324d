"""The remembered decisions of a project: one long-lived entity workflow per project, shared by its sessions.

Where project scope lives, and why here rather than in the PostgreSQL projection:

- A grant is an authorization: it changes what runs without a prompt. It must be as durable and as available as
  the sessions that obey it, and exactly one place must say whether it holds. Temporal is already that place for
  everything a session decides. The projection is not: it is optional (no `DATABASE_URL`, no projection), it is a
  copy written behind the workflows that may lag or be down for minutes, and making it a source of truth for one
  table would give the runtime two sources of truth. An entity workflow needs no other store and no new failure mode.
- Every change is an Update with a validator: a bad or unknown grant is refused before it touches history, and the
  caller (a session's activity, the client, the API, the CLI) gets an answer. The workflow's history is the audit
  trail of what was remembered and revoked, when; sessions record which grant approved each call in their ledger.

How sessions read it, deterministically: a session never reads shared state directly. When a call needs approval,
no deny rule asked for it, its tool can be remembered, no grant of the session's own matches, and the session has
a project (`UserMessage.project`, or the project of an approval it remembered), the session runs the activity
`approvals.project_grants`, which queries this workflow (activities/grants.py). The answer is an activity result in
the session's history, so a replay sees exactly the grants the live run saw. It is read again at every such call, so
a revocation holds from the next call on; if it cannot be read, the call asks a human (fail closed).

Writes: a session whose call was approved with scope `project` runs `approvals.remember_project_grant`
(update-with-start of this workflow); a grant with the same pattern is kept once, so a retried write changes
nothing. Revocations come from the client, the API and the CLI.

Bounded: at most `PROJECT_GRANTS_KEPT` active grants (the oldest goes first) and the newest `REVOKED_KEPT` revoked
ones; the workflow continues as new after `CHANGES_PER_RUN` changes, or sooner if Temporal suggests it, carrying
only those.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from workflows.grants import same_pattern
    from workflows.model import (
        ADD_PROJECT_GRANT_UPDATE,
        INVALID_INPUT_ERROR,
        PROJECT_GRANTS_QUERY,
        PROJECT_GRANTS_WORKFLOW,
        REVOKE_PROJECT_GRANT_UPDATE,
        UNKNOWN_GRANT_ERROR,
        ApprovalGrant,
        ProjectGrants,
        RevokeGrant,
    )

PROJECT_GRANTS_KEPT = 500
REVOKED_KEPT = 50
CHANGES_PER_RUN = 500


@workflow.defn(name=PROJECT_GRANTS_WORKFLOW)
class ProjectGrantsWorkflow:
    """The remembered decisions of one project (workflow id `approval-grants-<project>`)."""

    @workflow.init
    def __init__(self, input: ProjectGrants) -> None:
        self._project = input.project
        self._grants = list(input.grants)[-PROJECT_GRANTS_KEPT:]
        self._revoked = list(input.revoked)[-REVOKED_KEPT:]
        self._changes = 0

    @workflow.run
    async def run(self, input: ProjectGrants) -> None:
        await workflow.wait_condition(
            lambda: self._changes >= CHANGES_PER_RUN or workflow.info().is_continue_as_new_suggested()
        )
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(self.grants())

    @workflow.update(name=ADD_PROJECT_GRANT_UPDATE)
    def add_grant(self, grant: ApprovalGrant) -> ApprovalGrant:
        """Remember a grant; the one already kept when it has the same id or pattern."""
        existing = next((g for g in self._grants if g.grant_id == grant.grant_id or same_pattern(g, grant)), None)
        if existing is not None:
            return existing
        self._grants = [*self._grants, grant][-PROJECT_GRANTS_KEPT:]
        self._changes += 1
        return grant

    @add_grant.validator
    def _validate_add_grant(self, grant: ApprovalGrant) -> None:
        if grant.scope != "project" or grant.project != self._project:
            raise ApplicationError(
                f"grant {grant.grant_id} is not a grant of project {self._project!r}",
                type=INVALID_INPUT_ERROR,
                non_retryable=True,
            )
        if grant.revoked_at is not None or any(g.grant_id == grant.grant_id for g in self._revoked):
            raise ApplicationError(f"grant {grant.grant_id} is revoked", type=INVALID_INPUT_ERROR, non_retryable=True)

    @workflow.update(name=REVOKE_PROJECT_GRANT_UPDATE)
    def revoke_grant(self, request: RevokeGrant) -> ApprovalGrant:
        """Forget a grant; revoking one already revoked answers it again (no change)."""
        grant = next((g for g in self._grants if g.grant_id == request.grant_id), None)
        if grant is None:
            return next(g for g in self._revoked if g.grant_id == request.grant_id)
        revoked = grant.model_copy(update={"revoked_at": workflow.now(), "revoked_reason": request.reason})
        self._grants = [g for g in self._grants if g.grant_id != request.grant_id]
        self._revoked = [*self._revoked, revoked][-REVOKED_KEPT:]
        self._changes += 1
        return revoked

    @revoke_grant.validator
    def _validate_revoke_grant(self, request: RevokeGrant) -> None:
        if not any(g.grant_id == request.grant_id for g in (*self._grants, *self._revoked)):
            raise ApplicationError(
                f"unknown grant {request.grant_id!r} in project {self._project!r}",
                type=UNKNOWN_GRANT_ERROR,
                non_retryable=True,
            )

    @workflow.query(name=PROJECT_GRANTS_QUERY)
    def grants(self) -> ProjectGrants:
        return ProjectGrants(project=self._project, grants=self._grants, revoked=self._revoked)
