"""Request and response bodies of the HTTP API, in the original Agent Runtime's shapes (spec §4.1).

Contract types that cross Temporal (`StreamChunk`, `AgentType`, `Decision`, ...) come from `workflows.model`; the
models here exist only at the HTTP edge. They are declared on the routes so the OpenAPI document describes what is
really sent and returned.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator
from pydantic.functional_serializers import SerializerFunctionWrapHandler

from client.inbox import InboxItem
from workflows.model import (
    AgentType,
    ApprovalGrant,
    Decision,
    PlanDecisionKind,
    ProjectName,
    RememberDecision,
    StreamChunk,
    encodable_json,
)

# Session ids become Temporal workflow ids: printable, bounded. Anything else is refused with 422 before it reaches
# Temporal (which would answer an RPC error).
SESSION_ID_PATTERN = r"^[^\x00-\x1f\x7f]+$"
SESSION_ID_MAX_LENGTH = 200
SessionId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=SESSION_ID_MAX_LENGTH,
        pattern=SESSION_ID_PATTERN,
        description="The conversation's id (its workflow id is `session-<id>`).",
    ),
]


class _Body(BaseModel):
    """Request bodies: unknown fields are ignored, as the original's did, and lone UTF-16 surrogates (JSON's
    "\\ud800" escape with no pair, which no UTF-8 encoder takes) become U+FFFD before anything reads them."""

    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _encodable_text(cls, data: Any) -> Any:
        return encodable_json(data)


class _Out(BaseModel):
    """Response bodies. Fields named in `_omit_if_none` are left out when None (the original omitted them)."""

    # The wrap serializer would otherwise make the OpenAPI output schema an untyped object.
    model_config = ConfigDict(json_schema_mode_override="validation")
    _omit_if_none: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _omit_nones(self, handler: SerializerFunctionWrapHandler):  # no return type: it would become the schema
        data: dict[str, Any] = handler(self)
        for name in self._omit_if_none:
            if data.get(name) is None:
                data.pop(name, None)
        return data


# --- /agent/message/stream inputs (documentation and validation of `message`) ---


class UserMessageInput(_Body):
    """A chat message from the user; starts the session if needed."""

    type: Literal["user_message"]
    content: str = ""
    agent_type: AgentType | None = Field(default=None, description="Switch to this agent before the message is run.")
    role: str | None = Field(default=None, description="Sent by the IDE (always 'user'); ignored.")
    message_id: str | None = Field(
        default=None, max_length=200, description="Optional idempotency key: a repeated id is acknowledged only."
    )
    new_session: bool = Field(
        default=False,
        description="When the session is closed (failed or terminated), start a new one under the same id instead "
        "of refusing the message.",
    )
    project: ProjectName | None = Field(
        default=None,
        description="The project (workspace) whose remembered approvals apply to this session from now on.",
    )


class ToolResultInput(_Body):
    """The IDE's answer to a `tool_call`: `result` (any JSON) or `error`."""

    type: Literal["tool_result"]
    call_id: str = Field(min_length=1)
    result: Any = None
    error: Any = Field(default=None, description="Error text; a non-string value is sent on as its JSON text.")


class HitlDecisionInput(_Body):
    """A human decision on a tool call that waits for approval."""

    type: Literal["hitl_decision"]
    call_id: str = Field(min_length=1)
    decision: Decision
    modified_arguments: dict[str, Any] | None = Field(default=None, description="Required with decision 'edit'.")
    feedback: str | None = None
    remember: RememberDecision | None = Field(
        default=None,
        description="With 'approve': also approve later matching calls of this session (scope 'session') or of "
        "every session of a project (scope 'project' and its name); see the README.",
    )


class SwitchAgentInput(_Body):
    """An explicit switch to another agent."""

    type: Literal["switch_agent"]
    agent_type: AgentType
    reason: str | None = None
    content: str | None = Field(default=None, description="Required by the gateway's WebSocket schema; ignored.")


class PlanDecisionInput(_Body):
    """A human decision on a proposed plan (`plan_approval_required`); `modify` sends the feedback to the architect."""

    type: Literal["plan_decision"]
    approval_request_id: str = Field(min_length=1)
    decision: PlanDecisionKind
    feedback: str | None = None


class CancelTurnInput(_Body):
    """Stop the session's running turn (not in the original contract): open calls are closed as cancelled."""

    type: Literal["cancel_turn"]
    reason: str | None = None


MessageInput = Annotated[
    UserMessageInput | ToolResultInput | HitlDecisionInput | SwitchAgentInput | PlanDecisionInput | CancelTurnInput,
    Field(discriminator="type"),
]


class AgentStreamRequest(_Body):
    """The body the gateway posts. `message` is checked by type, so a bad message gets a 400 naming the problem."""

    session_id: SessionId | None = Field(
        default=None, description="Omitted: a new session is created and announced in a `session_info` chunk."
    )
    message: dict[str, Any] = Field(description="One of the message types (see AgentStreamRequestDoc).")


class AgentStreamRequestDoc(BaseModel):
    """What `POST /agent/message/stream` accepts (the OpenAPI document shows this schema)."""

    session_id: SessionId | None = None
    message: MessageInput


# --- /health ---


class HealthResponse(_Out):
    status: Literal["healthy"] = "healthy"
    service: Literal["agent-runtime"] = "agent-runtime"
    version: str


# --- /sessions ---


class CreateSessionRequest(_Body):
    session_id: SessionId | None = Field(default=None, description="Generated (a UUID) when omitted.")


class CreateSessionResponse(_Out):
    id: str
    message_count: int = 0
    created_at: datetime
    is_active: bool = True
    current_agent: str = AgentType.ORCHESTRATOR.value


class SessionListItem(_Out):
    id: str
    title: str | None
    message_count: int
    last_activity: datetime | None
    is_active: bool
    current_agent: str | None


class ListSessionsResponse(_Out):
    sessions: list[SessionListItem]
    total: int
    limit: int
    offset: int


class ToolCallFunction(_Out):
    name: str
    arguments: str = Field(description="The arguments as a JSON text, as OpenAI sends and expects them.")


class HistoryToolCall(_Out):
    """A tool call in the OpenAI chat shape, as the original stored it."""

    id: str
    type: Literal["function"] = "function"
    function: ToolCallFunction


class HistoryMessage(_Out):
    """One message as `/sessions/{id}/history` returns it: optional keys are left out when empty."""

    _omit_if_none: ClassVar[tuple[str, ...]] = ("name", "tool_call_id", "tool_calls")

    role: Literal["system", "user", "assistant", "tool"]
    content: str | None
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[HistoryToolCall] | None = None


class SessionMessage(_Out):
    """One stored message of a session (`GET /sessions/{id}?include_messages=true`)."""

    id: str
    role: Literal["system", "user", "assistant", "tool"]
    content: str | None
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[HistoryToolCall] | None = None
    created_at: datetime | None = None


class SessionDetail(_Out):
    id: str
    title: str | None
    description: str | None = None
    message_count: int
    messages: list[SessionMessage] | None = Field(default=None, description="Only with include_messages=true.")
    last_activity: datetime | None
    is_active: bool
    created_at: datetime | None
    duration_seconds: float | None


class GetSessionResponse(_Out):
    session: SessionDetail


class AgentSwitchItem(_Out):
    from_agent: str | None
    to_agent: str
    reason: str
    switched_at: datetime
    confidence: str | None = None


class HistoryResponse(_Out):
    session_id: str
    messages: list[HistoryMessage]
    message_count: int
    last_activity: datetime | None
    current_agent: str
    agent_history: list[AgentSwitchItem]


class PendingApprovalItem(_Out):
    """An unresolved approval, with the unified fields and the legacy tool fields (call_id = request_id)."""

    request_id: str
    request_type: Literal["tool", "plan"]
    subject: str
    details: dict[str, Any]
    reason: str
    created_at: datetime
    call_id: str
    tool_name: str | None
    arguments: dict[str, Any]


class PendingApprovalsResponse(_Out):
    session_id: str
    pending_approvals: list[PendingApprovalItem]
    count: int


# --- /agents ---


class AgentInfo(_Out):
    type: str
    name: str
    description: str
    allowed_tools: list[str]
    has_file_restrictions: bool


class ListAgentsResponse(_Out):
    agents: list[AgentInfo]
    total: int


class AgentContext(_Out):
    id: str
    session_id: str
    current_agent: str
    switch_count: int
    switch_history: list[AgentSwitchItem]
    last_switch_at: datetime | None
    created_at: datetime | None


class AgentContextResponse(_Out):
    context: AgentContext


class SwitchAgentRequest(_Body):
    target_agent: str = Field(description="orchestrator, coder, architect, debug, ask or universal.")
    reason: str
    confidence: str | None = Field(default=None, description="low, medium or high; kept in the switch history.")


# --- /events ---


class LlmTotals(_Out):
    requests: int = 0
    successful: int = 0
    failed: int = 0
    total_latency_ms: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class AggregateMetrics(_Out):
    """Counters summed over the sessions scanned (the newest `sessions_scanned` of `sessions_total`)."""

    sessions_total: int
    sessions_scanned: int
    truncated: bool = Field(description="True when more sessions exist than the scan bound.")
    sessions_by_status: dict[str, int]
    llm: LlmTotals
    classification: dict[str, int]
    agent_switches: dict[str, int] = Field(description='"<from>_to_<to>" -> count')
    tool_calls: dict[str, int] = Field(description="outcome -> count")
    approvals: dict[str, int] = Field(description="decision -> count")
    pending_approvals: int
    budget_stops: int


class MetricsResponse(_Out):
    metrics: AggregateMetrics
    computed: dict[str, float]
    timestamp: datetime


class SessionMetricsResponse(_Out):
    """The original's per-session LLM metrics, plus what the workflow counts besides."""

    session_id: str
    total_requests: int
    successful_requests: int
    failed_requests: int
    total_duration_ms: int
    average_duration_ms: float
    total_prompt_tokens: int
    total_completion_tokens: int
    total_tokens: int
    average_tokens_per_request: float
    requests_with_tools: int
    requests: list[dict[str, Any]] = Field(
        default_factory=list, description="Per-request detail lives in the PostgreSQL projection; always empty here."
    )
    classification_calls: int
    classification_fallbacks: int
    agent_switches: int
    tool_calls: dict[str, int]
    approvals: dict[str, int]
    budget_stops: int


class MetricsSessionsResponse(_Out):
    sessions: list[str]
    count: int


# --- remembered decisions (api/routes_grants.py) ---


class GrantsResponse(_Out):
    """Remembered decisions of a session or a project: active ones (`revoked_at` null), then revoked ones."""

    session_id: str | None = None
    project: str | None = None
    grants: list[ApprovalGrant]
    count: int = Field(description="Active grants.")


class RevokeGrantRequest(_Body):
    reason: str | None = Field(default=None, max_length=1000, description="Kept with the revoked grant.")


class RevokedGrantResponse(_Out):
    grant_id: str
    revoked: bool = True
    duplicate: bool = Field(description="It was already revoked: nothing changed.")
    grant: ApprovalGrant | None = Field(default=None, description="The revoked grant (projects).")


# --- the approvals inbox (api/routes_approvals.py) ---


class ApprovalInboxResponse(_Out):
    """One page of pending approvals across sessions, oldest first."""

    approvals: list[InboxItem]
    count: int = Field(description="Items on this page.")
    total: int = Field(description="Matching items on every page.")
    limit: int
    offset: int
    next_offset: int | None = Field(description="The next page's offset; null on the last page.")
    scanned: bool = Field(
        description="The search attributes were not usable, so every running session of this runtime was asked."
    )
    unanswered_sessions: list[str] = Field(
        default_factory=list, description="During a scan, sessions that did not answer (is a worker running?)."
    )


class ApprovalDecisionRequest(_Body):
    """A decision on a pending approval; a plan takes `approve` or `reject` (with `feedback`) only."""

    decision: Decision
    modified_arguments: dict[str, Any] | None = Field(default=None, description="Required with decision 'edit'.")
    feedback: str | None = Field(default=None, description="Given to the model (a rejection's reason).")
    remember: RememberDecision | None = Field(
        default=None, description="With 'approve' of a tool call: also approve later matching calls (see the README)."
    )


class ApprovalDecisionResponse(_Out):
    session_id: str
    call_id: str = Field(description="The call id (or a plan approval's request id) the decision named.")
    decision: Decision
    duplicate: bool = Field(description="The same decision was already taken: nothing changed.")
    detail: str = ""
    resume_from: int | None = Field(
        default=None,
        description="Where the decision's events start on the session's stream "
        "(`GET /agent/stream/{session_id}?from_offset=`).",
    )
    events: list[StreamChunk] = Field(
        default_factory=list, description="The events the decision caused before the session paused again."
    )


class ErrorResponse(BaseModel):
    detail: Any
