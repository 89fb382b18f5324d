"""The wire contract of the Agent Runtime.

Every type that crosses a Temporal boundary (workflow input, signal, update, query, activity input and output,
stream event) lives here, together with the handler names and the error types, so the workflow, the activities
and the client side cannot drift apart (bug B14 was exactly that drift). This module imports no workflow code
and does no I/O, so the workflow sandbox can import it as is.

Field names follow the original Agent Runtime's HTTP contract (spec §4.1) where one exists, so the gateway's
payloads validate unchanged.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from temporalio.common import SearchAttributeKey

# --- Names that are a persisted contract: changing one breaks running sessions and deployed gateways. ---

DEFAULT_TASK_QUEUE = "agent-runtime"
WORKFLOW_ID_PREFIX = "session-"
EVENTS_TOPIC = "events"
# The workflow stream's offset query (temporalio.contrib.workflow_streams: WorkflowStreamClient.get_offset).
STREAM_OFFSET_QUERY = "__temporal_workflow_stream_offset"

# Signals (the design card) and the updates that give callers an answer; one code path behind each pair.
USER_MESSAGE_SIGNAL = "user_message"
TOOL_RESULT_SIGNAL = "tool_result"
HITL_DECISION_SIGNAL = "hitl_decision"
SWITCH_AGENT_SIGNAL = "switch_agent"
PLAN_DECISION_SIGNAL = "plan_decision"
CANCEL_TURN_SIGNAL = "cancel_turn"
USER_MESSAGE_UPDATE = "submit_user_message"
TOOL_RESULT_UPDATE = "submit_tool_result"
HITL_DECISION_UPDATE = "submit_hitl_decision"
SWITCH_AGENT_UPDATE = "submit_switch_agent"
PLAN_DECISION_UPDATE = "submit_plan_decision"
CANCEL_TURN_UPDATE = "submit_cancel_turn"
REVOKE_GRANT_SIGNAL = "revoke_grant"
REVOKE_GRANT_UPDATE = "submit_revoke_grant"
STATE_QUERY = "state"
TRANSCRIPT_QUERY = "transcript"
PENDING_APPROVALS_QUERY = "pending_approvals"
APPROVALS_QUERY = "approvals"
GRANTS_QUERY = "approval_grants"

CONVERSATION_WORKFLOW = "ConversationWorkflow"
# The remembered decisions of one project (workflows/project_grants.py): one entity workflow per project.
PROJECT_GRANTS_WORKFLOW = "ProjectApprovalGrants"
PROJECT_GRANTS_ID_PREFIX = "approval-grants-"
ADD_PROJECT_GRANT_UPDATE = "add_grant"
REVOKE_PROJECT_GRANT_UPDATE = "revoke_grant"
PROJECT_GRANTS_QUERY = "grants"

# Activity names are a persisted contract too (they are recorded in every history).
CHAT_COMPLETION_ACTIVITY = "llm.chat_completion"
RECORD_PROJECTION_ACTIVITY = "persistence.record"
ARCHIVE_TRANSCRIPT_ACTIVITY = "content.archive_transcript"
PROJECT_GRANTS_ACTIVITY = "approvals.project_grants"
REMEMBER_PROJECT_GRANT_ACTIVITY = "approvals.remember_project_grant"
APPROVAL_WEBHOOK_ACTIVITY = "notify.approval_webhook"

# ApplicationError types, shared by raise sites (validators, activities) and catch sites (client, API).
UNKNOWN_CALL_ID_ERROR = "UnknownCallId"
APPROVAL_ALREADY_RESOLVED_ERROR = "ApprovalAlreadyResolved"
INVALID_INPUT_ERROR = "InvalidInput"
LLM_REQUEST_REJECTED_ERROR = "LlmRequestRejected"
LLM_UNAVAILABLE_ERROR = "LlmUnavailable"
LLM_BAD_RESPONSE_ERROR = "LlmBadResponse"
LLM_CONTEXT_TOO_LONG_ERROR = "LlmContextTooLong"
CONTENT_STORE_UNAVAILABLE_ERROR = "ContentStoreUnavailable"
UNKNOWN_GRANT_ERROR = "UnknownGrant"
WEBHOOK_UNAVAILABLE_ERROR = "WebhookUnavailable"
WEBHOOK_REJECTED_ERROR = "WebhookRejected"

# The original llm-proxy reports a provider failure as HTTP 200 with assistant text starting with this (bug B2): such
# text is an error, never content (invariant I3).
PROXY_ERROR_PREFIX = "[Error]"


# Custom search attributes for the Temporal Web UI and visibility queries. They must be registered in the namespace
# (the dev stack and the compose setup do it) before a session may set them; see ConversationConfig.search_attributes.
PENDING_APPROVALS_ATTRIBUTE = SearchAttributeKey.for_int("AgentRuntimePendingApprovals")
OLDEST_PENDING_APPROVAL_ATTRIBUTE = SearchAttributeKey.for_datetime("AgentRuntimeOldestPendingApproval")
PENDING_TOOLS_ATTRIBUTE = SearchAttributeKey.for_keyword_list("AgentRuntimePendingTools")
CURRENT_AGENT_ATTRIBUTE = SearchAttributeKey.for_keyword("AgentRuntimeCurrentAgent")
SESSION_STATUS_ATTRIBUTE = SearchAttributeKey.for_keyword("AgentRuntimeSessionStatus")
# The call the session waits on (its oldest pending approval, else the IDE result it waits for) and that call's tool:
# a Web UI column says which call to decide without opening the session. Sessions started with
# `ConversationConfig.waiting_call_attributes` set them (runs with the `operator-view` patch).
WAITING_CALL_ID_ATTRIBUTE = SearchAttributeKey.for_keyword("AgentRuntimeWaitingCallId")
WAITING_TOOL_ATTRIBUTE = SearchAttributeKey.for_keyword("AgentRuntimeWaitingTool")
SESSION_ATTRIBUTES: tuple[SearchAttributeKey[Any], ...] = (
    PENDING_APPROVALS_ATTRIBUTE,
    OLDEST_PENDING_APPROVAL_ATTRIBUTE,
    PENDING_TOOLS_ATTRIBUTE,
    CURRENT_AGENT_ATTRIBUTE,
    SESSION_STATUS_ATTRIBUTE,
)
WAITING_CALL_ATTRIBUTES: tuple[SearchAttributeKey[Any], ...] = (WAITING_CALL_ID_ATTRIBUTE, WAITING_TOOL_ATTRIBUTE)
SEARCH_ATTRIBUTES: tuple[SearchAttributeKey[Any], ...] = (*SESSION_ATTRIBUTES, *WAITING_CALL_ATTRIBUTES)


def workflow_id_for(session_id: str) -> str:
    """The workflow id of a session: one workflow per conversation."""
    return f"{WORKFLOW_ID_PREFIX}{session_id}"


def project_grants_workflow_id(project: str) -> str:
    """The workflow id of a project's remembered decisions."""
    return f"{PROJECT_GRANTS_ID_PREFIX}{project}"


class ContractModel(BaseModel):
    """Base for contract types: unknown fields are ignored so older and newer peers interoperate."""

    model_config = ConfigDict(extra="ignore")


_SURROGATE = re.compile("[\ud800-\udfff]")


def encodable_text(text: str) -> str:
    """`text` as UTF-8 can hold it: a surrogate pair split over two code points joined again, a lone UTF-16
    surrogate replaced by U+FFFD.

    JSON may escape a lone one (`"\\ud800"`: JavaScript's JSON.stringify writes that for a binary file read as
    text), Python decodes it into the string, and then no UTF-8 encoder takes that string: not Temporal's payload
    converter, the content store, PostgreSQL or the LLM request.
    """
    # isascii() is free next to the search (40 MB: ~0 against ~250 ms), and code and logs are mostly ASCII.
    if text.isascii() or not _SURROGATE.search(text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def encodable_json(value: Any) -> Any:
    """`value` with `encodable_text` applied to every string in it, keys included."""
    if isinstance(value, str):
        return encodable_text(value)
    if isinstance(value, dict):
        return {encodable_json(key): encodable_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [encodable_json(item) for item in value]
    return value


class InputModel(ContractModel):
    """Base of what a session takes from outside (gateway, IDE, CLI): its text is made encodable on the way in, so
    a binary tool result is delivered (with U+FFFD where it was not text) instead of failing the input."""

    @model_validator(mode="before")
    @classmethod
    def _encodable_text(cls, data: Any) -> Any:
        return encodable_json(data)


# A project name becomes part of a workflow id (`approval-grants-<project>`): printable, bounded, no blanks.
ProjectName = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.:/@+-]*$")]


class AgentType(StrEnum):
    ORCHESTRATOR = "orchestrator"
    CODER = "coder"
    ARCHITECT = "architect"
    DEBUG = "debug"
    ASK = "ask"
    UNIVERSAL = "universal"


# --- Content stored by reference (a claim check; see workflows/content.py) ---


class ContentRef(ContractModel):
    """Text kept outside workflow history: a claim on the content store, plus what the workflow needs to know.

    Large tool results, tool arguments, user messages and assistant texts are stored by the edge that receives them
    (the client, the LLM activity) and travel through Temporal as this reference, so no payload and no carried state
    grows with what a tool returned. Whoever hands content to a person or a provider resolves it (the client, the
    API, the LLM activity); workflow code only looks at `size` and `preview`.
    """

    driver: str = Field(description="The storage driver that holds it (its name).")
    claim: dict[str, str] = Field(description="The driver's claim: what it needs to find the content again.")
    sha256: str = Field(description="Hex digest of the UTF-8 content.")
    size: int = Field(ge=0, description="Length of the content in characters.")
    preview: str = Field(default="", description="The first characters, for titles, routing, logs and the Web UI.")
    media: Literal["text", "json"] = Field(
        default="text", description="json: the content is a JSON document standing for a JSON value (tool arguments)."
    )


# --- Conversation history (OpenAI chat shape) ---


class ToolCall(ContractModel):
    """One function call requested by the LLM; `id` is the call id the IDE answers with.

    A large argument value is replaced by a reference marker (`workflows.content.ref_marker`); the client resolves it
    before the call reaches the IDE.
    """

    id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    invalid_arguments: str | None = Field(
        default=None, description="Why the model's arguments could not be read (not JSON, not an object, cut off)."
    )


class ChatMessage(ContractModel):
    """One message of the conversation as the LLM sees it, plus the runtime's bookkeeping."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str | ContentRef | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None
    message_id: str = ""
    agent: AgentType | None = None
    created_at: datetime | None = None


# --- Inputs (signals and updates) ---


class TurnInput(InputModel):
    """An input that starts or continues an agent turn."""

    live_tokens: bool = Field(
        default=False,
        description=(
            "Publish the answers' token deltas (`assistant_delta`) while the model writes them, from now until an "
            "input says otherwise (with `llm_streaming`). Off, the model's answer is fetched whole: no delta costs "
            "a workflow task that nobody reads."
        ),
    )
    wait_for_events: bool = Field(
        default=False,
        description=(
            "Answer the update once the input's first events are published (or the session waits for the next "
            "input), however long the model takes, instead of at the session's first pause: the events come with "
            "the receipt and a plain turn needs no poll of the stream. The HTTP API sets it unless live tokens are "
            "wanted (those go out on the stream as they come)."
        ),
    )


class UserMessage(TurnInput):
    """A user's chat message. `agent_type` asks for an explicit switch before the message is processed."""

    content: str | ContentRef = ""
    agent_type: AgentType | None = None
    message_id: str | None = Field(
        default=None, description="Caller's idempotency key; a repeated id is acknowledged and ignored."
    )
    project: ProjectName | None = Field(
        default=None,
        description="The project (the gateway's name for the workspace) whose remembered approvals apply to this "
        "session from this message on; None keeps the current one.",
    )


class ToolResult(TurnInput):
    """The IDE's answer to a tool call: `result` (any JSON) or `error` (text).

    `content` is the answer already rendered as the tool message's text and stored by reference; the client sets it
    for large results (and then leaves `result` and `error` empty), so a 3 MB file never enters workflow history.
    """

    call_id: str = Field(min_length=1)
    result: Any = None
    error: str | None = None
    content: ContentRef | None = None
    failed: bool = Field(default=False, description="With `content`: the tool failed (the text is its error).")


class Decision(StrEnum):
    APPROVE = "approve"
    EDIT = "edit"
    REJECT = "reject"


class GrantScope(StrEnum):
    """How far an approval reaches: this call only, later calls of the session, or of every session of a project."""

    ONCE = "once"
    SESSION = "session"
    PROJECT = "project"


class RememberDecision(ContractModel):
    """An approval that also holds for later calls matching a pattern derived from this one (workflows/grants.py).

    Commands (`execute_command`) are remembered as their words (program and arguments, after shell quoting is
    removed): all of them (the exact command) or the first `command_words`; a later command matches only if it is
    a simple command in the same working directory. File tools (`write_file`, `create_directory`) are remembered as
    the exact path, or every path under `path_prefix`.
    """

    scope: GrantScope = GrantScope.ONCE
    project: ProjectName | None = Field(default=None, description="Required with scope 'project'.")
    command_words: int | None = Field(
        default=None,
        ge=1,
        le=32,
        description="Commands: remember the program and its first arguments, this many words in all; None: the "
        "exact command.",
    )
    path_prefix: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="File tools: remember every path under this directory (it must contain the call's path); "
        "None: the exact path.",
    )

    @model_validator(mode="after")
    def _project_with_project_scope(self) -> RememberDecision:
        if (self.scope is GrantScope.PROJECT) != (self.project is not None):
            raise ValueError("give a project exactly when the scope is 'project'")
        return self


class HitlDecision(TurnInput):
    """A human's decision on a tool call that waits for approval.

    `remember` makes an approval hold for later calls too (scope `session` or `project`); only `approve` can be
    remembered.
    """

    call_id: str = Field(min_length=1)
    decision: Decision
    modified_arguments: dict[str, Any] | None = None
    feedback: str | None = None
    remember: RememberDecision | None = None

    @model_validator(mode="after")
    def _edit_needs_arguments(self) -> HitlDecision:
        if self.decision is Decision.EDIT and self.modified_arguments is None:
            raise ValueError("decision 'edit' needs modified_arguments")
        if self.remember is not None and self.remember.scope is not GrantScope.ONCE:
            if self.decision is not Decision.APPROVE:
                raise ValueError("only an 'approve' decision can be remembered")
        return self


class PlanDecisionKind(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    MODIFY = "modify"


class PlanDecision(TurnInput):
    """A human's decision on a proposed plan; `modify` sends the feedback back to the architect."""

    approval_request_id: str = Field(min_length=1)
    decision: PlanDecisionKind
    feedback: str | None = None


class CancelTurn(InputModel):
    """Stop the turn that is running: its open tool calls are closed as cancelled, and queued inputs still run."""

    reason: str | None = None


class SwitchAgent(InputModel):
    """An explicit request to hand the conversation to another agent."""

    agent_type: AgentType
    reason: str | None = None
    confidence: str | None = None


class InputReceipt(ContractModel):
    """What an update caller learns: the input was recorded (and whether it only repeated an earlier one), where in
    the session's stream its events start, and the events it caused before the session next waited.

    A caller relays `events` and, unless one of them is final, follows the stream from the offset after the last
    one (from `offset` when there are none): it needs no separate read of the stream's offset, and an approval's
    re-emitted `tool_call` arrives with the answer to the decision itself.
    """

    accepted: bool = True
    duplicate: bool = False
    queued: bool = False
    detail: str = ""
    offset: int | None = None
    """The stream offset of the first event this input caused (None from a worker older than this field)."""
    events: list[EmittedChunk] = Field(default_factory=list)
    """The events from `offset` on, without a gap, that were published before the session next waited (up to a
    bounded size): often the whole answer to the input, up to its final chunk."""


# --- Approvals and outstanding tool calls ---


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


class PendingApproval(ContractModel):
    """An approval request and its whole trail. Kept after it is settled, so repeats are recognisable."""

    request_id: str
    request_type: Literal["tool", "plan"] = "tool"
    session_id: str
    call_id: str
    tool_name: str
    subject: str
    arguments: dict[str, Any]
    edited_arguments: dict[str, Any] | None = None
    reason: str
    agent: AgentType
    status: ApprovalStatus = ApprovalStatus.PENDING
    created_at: datetime
    expires_at: datetime | None = None
    remind_at: datetime | None = Field(
        default=None, description="When a reminder goes out if it is still pending (its policy rule's remind_after)."
    )
    escalate_at: datetime | None = Field(
        default=None, description="When it is escalated if it is still pending (its policy rule's escalate_after)."
    )
    decided_at: datetime | None = None
    decided_by: (
        Literal[
            "hitl_decision",
            "tool_result",
            "expiry",
            "plan_decision",
            "cancel_turn",
            "turn_failed",
            "policy",
            "remembered",
        ]
        | None
    ) = Field(
        default=None,
        description="Who settled it; 'policy' (an allow rule with conditions) and 'remembered' (a remembered "
        "decision) are automatic approvals, recorded already settled.",
    )
    decision: Decision | PlanDecisionKind | None = None
    feedback: str | None = None
    grant_id: str | None = Field(default=None, description="decided_by 'remembered': the grant that approved it.")
    remembered_as: str | None = Field(
        default=None, description="A human approval that was remembered: the grant it created."
    )


class ApprovalCommands(ContractModel):
    """How a person decides a pending approval: the exact `agent-runtime` commands, and the HTTP route."""

    approve: str
    edit: str | None = Field(default=None, description="Tool approvals only: a plan is approved or rejected.")
    reject: str
    http: str = Field(description='e.g. `POST /approvals/s1/call_1 {"decision": "approve"}`.')


class ApprovalNotice(ContractModel):
    """What the approval webhook receives when an approval still waits at its reminder or escalation time
    (activities/webhook.py). `notice_id` is the same on every retry of one notice: a receiver drops repeats."""

    notice_id: str
    kind: Literal["reminder", "escalation"]
    session_id: str
    workflow_id: str
    request_id: str
    request_type: Literal["tool", "plan"]
    call_id: str
    tool_name: str
    agent: AgentType
    reason: str
    arguments_summary: str
    waiting_since: datetime
    waited_seconds: float
    expires_at: datetime | None = None
    escalate_at: datetime | None = None
    commands: ApprovalCommands
    sent_at: datetime


class NoticeDelivery(ContractModel):
    """How a notice went: `delivered` with the receiver's status, or why it was not sent (no webhook configured)."""

    delivered: bool
    status_code: int | None = None
    detail: str = ""


class CallStatus(StrEnum):
    AWAITING_APPROVAL = "awaiting_approval"
    AWAITING_RESULT = "awaiting_result"
    QUEUED = "queued"  # a later call of the same assistant message, handled after the ones before it


class OutstandingCall(ContractModel):
    """A tool call of the current assistant message that has no tool message yet."""

    call_id: str
    tool_name: str
    arguments: dict[str, Any]
    agent: AgentType
    status: CallStatus
    since: datetime
    lease_expires_at: datetime | None = None


# --- Events streamed to clients (the original's StreamChunk, spec §4.1) ---


class ChunkType(StrEnum):
    ASSISTANT_MESSAGE = "assistant_message"
    # Live tokens while the LLM writes; `metadata.attempt` tells a retried call's tokens apart. The complete text
    # follows as an `assistant_message` once it is stored, so clients that ignore deltas lose nothing.
    ASSISTANT_DELTA = "assistant_delta"
    TOOL_CALL = "tool_call"
    TOOL_RESULT = "tool_result"
    AGENT_SWITCHED = "agent_switched"
    ERROR = "error"
    STATUS = "status"
    PLAN_APPROVAL_REQUIRED = "plan_approval_required"
    PLAN_REJECTED = "plan_rejected"
    PLAN_MODIFICATION_REQUESTED = "plan_modification_requested"
    SUBTASK_COMPLETED = "subtask_completed"
    EXECUTION_COMPLETED = "execution_completed"


class StreamChunk(ContractModel):
    """One event of a session's stream, in the original chunk shape.

    `is_final` marks a wait point: the runtime now waits for the user, the IDE or a human decision, so an HTTP
    stream ends there (bug B11).
    """

    type: ChunkType
    content: str | ContentRef | None = None
    token: str | ContentRef | None = None
    is_final: bool = False
    call_id: str | None = None
    tool_name: str | None = None
    arguments: dict[str, Any] | None = None
    requires_approval: bool | None = None
    error: str | None = None
    metadata: dict[str, Any] | None = None
    session_id: str | None = None
    approval_request_id: str | None = None
    plan_id: str | None = None
    plan_summary: dict[str, Any] | None = None


class EmittedChunk(ContractModel):
    """A chunk and its offset in the session's stream (follow the stream from `offset + 1`)."""

    offset: int
    chunk: StreamChunk


# --- Plans (workflows/plans.py) ---


class SubtaskStatus(StrEnum):
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    DONE = "done"
    FAILED = "failed"
    BLOCKED = "blocked"


class PlanStatus(StrEnum):
    PENDING_APPROVAL = "pending_approval"
    REJECTED = "rejected"
    MODIFICATION_REQUESTED = "modification_requested"
    EXPIRED = "expired"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Subtask(ContractModel):
    index: int
    title: str
    description: str
    agent: AgentType
    estimated_time_minutes: int
    dependencies: list[int] = Field(default_factory=list)
    status: SubtaskStatus = SubtaskStatus.PENDING
    result: str | None = None
    error: str | None = None


class Plan(ContractModel):
    plan_id: str
    title: str
    description: str
    call_id: str
    approval_request_id: str
    created_at: datetime
    subtasks: list[Subtask]
    status: PlanStatus = PlanStatus.PENDING_APPROVAL
    feedback: str | None = None


# --- Approval policy (one policy, evaluated in the workflow; see workflows/policy.py) ---


class ArgumentPredicate(ContractModel):
    """A condition on one argument of a tool call; all predicates of a rule must hold for it to match.

    On a command (`execute_command`'s `command`) and on a path (`path`, `cwd`) the operators read shell words and
    path components, not characters (workflows/predicates.py).
    """

    argument: str
    op: Literal["equals", "contains", "matches", "startswith", "gt", "lt"]
    value: Any


class ApprovalRule(ContractModel):
    """`pattern` is a shell wildcard over the tool name (full match).

    A rule with `requires_approval` and conditions (`when`) is a deny rule: it wins over every allow rule, wherever
    it stands. Otherwise the first matching rule wins (workflows/policy.py).
    """

    pattern: str
    requires_approval: bool
    reason: str = ""
    when: list[ArgumentPredicate] = Field(default_factory=list)
    timeout_seconds: float | None = Field(
        default=None, gt=0, description="Expire the approval after this long; None uses the policy default."
    )
    remind_after_seconds: float | None = Field(
        default=None,
        gt=0,
        description="Remind (an event on the session's stream and the approval webhook) once the approval has "
        "waited this long; None uses the policy default.",
    )
    escalate_after_seconds: float | None = Field(
        default=None,
        gt=0,
        description="Escalate (the same, marked as an escalation) once it has waited this long; None uses the "
        "policy default.",
    )

    @model_validator(mode="after")
    def _remind_before_escalate_before_expiry(self) -> ApprovalRule:
        check_approval_timers(self.remind_after_seconds, self.escalate_after_seconds, self.timeout_seconds)
        return self


def check_approval_timers(remind: float | None, escalate: float | None, expire: float | None) -> None:
    """A reminder comes before an escalation, and both before the expiry (a timer after the expiry never fires).

    Raises:
        ValueError: They are out of order.
    """
    named = [(n, v) for n, v in (("remind after", remind), ("escalate after", escalate), ("expire after", expire))]
    given = [(n, v) for n, v in named if v is not None]
    for (first, earlier), (second, later) in zip(given, given[1:], strict=False):
        if earlier >= later:
            raise ValueError(f"{first} ({earlier:g} s) must be shorter than {second} ({later:g} s)")


class ApprovalPolicy(ContractModel):
    enabled: bool = True
    rules: list[ApprovalRule] = Field(default_factory=list)
    default_requires_approval: bool = False
    default_timeout_seconds: float | None = Field(default=None, gt=0, description="None: approvals wait until decided.")
    default_remind_after_seconds: float | None = Field(default=None, gt=0, description="None: no reminder.")
    default_escalate_after_seconds: float | None = Field(default=None, gt=0, description="None: no escalation.")


class ApprovalRequirement(ContractModel):
    """The policy's verdict for one tool call."""

    requires_approval: bool
    reason: str = ""
    timeout_seconds: float | None = None
    remind_after_seconds: float | None = None
    escalate_after_seconds: float | None = None
    rule_index: int | None = Field(default=None, description="The deciding rule's position; None: the default.")
    deny_rule: bool = Field(
        default=False, description="A deny rule asked: no remembered decision may approve the call."
    )
    conditional: bool = Field(
        default=False,
        description="An allow rule with conditions approved the call: an automatic approval, recorded as such.",
    )


class ApprovalGrant(ContractModel):
    """A remembered approval: later calls matching its pattern are approved without asking (workflows/grants.py).

    `words` are a command's leading words (program first) or a path's components (`/` first when absolute);
    `match` says whether a call's words must be exactly these or only begin with them.
    """

    grant_id: str
    scope: Literal["session", "project"]
    project: str | None = None
    tool_name: str
    argument: str = Field(description="The argument the pattern reads: 'command' or 'path'.")
    match: Literal["exact", "prefix"]
    words: list[str] = Field(min_length=1)
    cwd: str | None = Field(default=None, description="Commands: the working directory approved ('' = default).")
    description: str = Field(description='The pattern as people read it, e.g. "execute_command: npm test ...".')
    session_id: str = Field(description="The session whose decision created it.")
    call_id: str = Field(description="The call whose approval created it.")
    created_at: datetime
    revoked_at: datetime | None = None
    revoked_reason: str | None = None


class RevokeGrant(ContractModel):
    """Forget a remembered decision: calls it would have approved ask again."""

    grant_id: str = Field(min_length=1)
    reason: str | None = Field(default=None, max_length=1000)


class ProjectGrantsRequest(ContractModel):
    """Input of the activity that reads a project's remembered decisions for a session."""

    project: str


class ProjectGrants(ContractModel):
    """A project's remembered decisions (active ones, and the newest revoked ones for the record).

    Also the input of its entity workflow (workflows/project_grants.py), carried across continue-as-new.
    """

    project: str
    grants: list[ApprovalGrant] = Field(default_factory=list)
    revoked: list[ApprovalGrant] = Field(default_factory=list)


# --- Session configuration, counters, transcripts and query results (the workflow input: workflows/state.py) ---


class ConversationConfig(ContractModel):
    """Per-session settings, fixed when the session starts so a running session is never changed under it."""

    multi_agent_mode: bool = True
    llm_model: str = "gpt-4o-mini"
    llm_context_tokens: int = Field(
        default=32_000,
        ge=1_000,
        description="The model's context window in tokens; the context builder fits each request into it.",
    )
    approval_policy: ApprovalPolicy | None = None
    tool_lease_seconds: float = Field(default=600.0, gt=0)
    tool_call_budget: int = Field(default=20, ge=1)
    llm_timeout_seconds: float = Field(default=120.0, gt=0)
    llm_max_attempts: int = Field(default=3, ge=1)
    max_agent_switches: int = Field(default=50, ge=1)
    llm_streaming: bool = Field(
        default=True,
        description="Stream agent answers token by token to clients that ask for it (`live_tokens` on their input).",
    )
    search_attributes: bool = Field(
        default=False, description="Keep the custom search attributes current (only once they are registered)."
    )
    waiting_call_attributes: bool = Field(
        default=False,
        description="With `search_attributes`, also keep the waiting call's id and tool current (only once those "
        "two are registered: sessions started before they existed never set them).",
    )
    approval_webhook: bool = Field(
        default=False,
        description="Call the approval webhook on reminders and escalations (the URL stays in the worker's settings, "
        "out of workflow history).",
    )
    projection_enabled: bool = Field(
        default=False, description="Write the PostgreSQL projection (set when the runtime has a database)."
    )
    continue_as_new_after_turns: int | None = Field(
        default=None,
        ge=1,
        description="Also continue-as-new after this many turns (None: only when Temporal suggests).",
    )
    continue_as_new_after_events: int = Field(
        default=1000,
        ge=20,
        description="Also continue-as-new once a run has this many history events: a worker that does not have the "
        "session cached (a restart, an eviction) replays the whole run before it answers, at about 1 ms per event.",
    )


class TokenUsage(ContractModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class AgentSwitchRecord(ContractModel):
    from_agent: AgentType | None
    to_agent: AgentType
    reason: str
    switched_at: datetime
    confidence: str | None = None
    source: Literal["classification", "switch_mode", "explicit", "single_agent", "plan"] = "explicit"


class SessionCounters(ContractModel):
    """Metrics derived from the workflow itself (spec §7): what the original's event bus never filled."""

    llm_requests: int = 0
    llm_failures: int = 0
    llm_latency_ms: int = 0
    tokens: TokenUsage = Field(default_factory=TokenUsage)
    classification_calls: int = 0
    classification_fallbacks: int = 0
    tool_calls: dict[str, int] = Field(default_factory=dict, description="outcome -> count")
    approvals: dict[str, int] = Field(
        default_factory=dict,
        description="decision -> count; automatic approvals count under 'policy' (an allow rule with conditions) "
        "and 'remembered' (a remembered decision).",
    )
    budget_stops: int = 0
    turn_failures: int = Field(default=0, description="Turns ended by a bug inside the runtime (the session went on).")
    projection_dropped: int = Field(
        default=0, description="Projection records dropped because the backlog was full (the database was down long)."
    )
    projection_quarantined: int = Field(
        default=0, description="Projection records PostgreSQL refused; kept in its quarantine table, not retried."
    )


class TranscriptArchive(ContractModel):
    """The older part of a conversation, kept in the content store as a chain of segments (newest first).

    At continue-as-new the workflow stores the messages it no longer carries as one `TranscriptSegment` that points
    at the previous one, and keeps only this small handle; the LLM activity and the client read back what they need.
    """

    head: ContentRef = Field(description="The newest segment (a JSON `TranscriptSegment`).")
    message_count: int = Field(ge=0, description="How many messages the whole chain holds.")
    segments: int = Field(default=1, ge=1)


class TranscriptSegment(ContractModel):
    """One stored slice of a conversation: messages `first_seq`.. and the segment before it."""

    first_seq: int = Field(ge=0)
    messages: list[ChatMessage]
    previous: TranscriptArchive | None = None


class ArchiveTranscriptInput(ContractModel):
    """Store `messages` (which start at `first_seq`) as the newest segment after `previous`."""

    session_id: str
    first_seq: int = Field(ge=0)
    messages: list[ChatMessage]
    previous: TranscriptArchive | None = None


class TranscriptView(ContractModel):
    """What the `transcript` query answers: the archived chain (read it from the content store) and the rest."""

    archive: TranscriptArchive | None = None
    first_seq: int = Field(default=0, description="Position of `messages[0]` in the whole conversation.")
    messages: list[ChatMessage] = Field(default_factory=list)


class SessionStatus(StrEnum):
    IDLE = "idle"
    RUNNING = "running"
    AWAITING_APPROVAL = "awaiting_approval"
    AWAITING_TOOL_RESULT = "awaiting_tool_result"


class SessionState(ContractModel):
    session_id: str
    title: str | None = Field(default=None, description="The first user message, at most 500 characters.")
    status: SessionStatus
    current_agent: AgentType
    pending_approvals: list[PendingApproval]
    outstanding_calls: list[OutstandingCall]
    queued_inputs: int
    message_count: int
    switches: list[AgentSwitchRecord]
    counters: SessionCounters
    plans: list[Plan] = Field(default_factory=list)
    created_at: datetime | None = None
    last_activity: datetime | None = None
    run: int = 1


# --- LLM activity ---


class ToolSpec(ContractModel):
    """An OpenAI function tool."""

    name: str
    description: str
    parameters: dict[str, Any]


class LlmRequest(ContractModel):
    """One chat completion. `messages` already starts with the agent's system prompt.

    `messages` is the current run's part of the conversation (small: large content is referenced) and `transcript`
    the archived rest; the activity builds the provider request from both, fitted to `context_tokens`.
    """

    session_id: str
    purpose: Literal["agent", "classification"] = "agent"
    agent: AgentType
    model: str
    messages: list[ChatMessage]
    transcript: TranscriptArchive | None = None
    context_tokens: int = Field(default=32_000, ge=1_000, description="The model's context window.")
    tools: list[ToolSpec] = Field(default_factory=list)
    temperature: float | None = None
    timeout_seconds: float = 120.0
    stream: bool = Field(default=False, description="Stream the answer and publish its tokens to the session.")
    request_id: str = ""


class LlmReply(ContractModel):
    """A successful completion. Failures are raised as ApplicationError, never returned as content (I3).

    Large content and tool arguments come back stored by reference (the activity stores them).
    """

    content: str | ContentRef = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    finish_reason: str | None = None
    model: str = ""
    usage: TokenUsage = Field(default_factory=TokenUsage)
    latency_ms: int = 0
    context_tokens: int | None = Field(
        default=None, description="Set when the provider refused the context as too long: the window that worked."
    )
    omitted_messages: int = Field(default=0, description="Older messages left out to fit the context window.")
    server_address: str | None = Field(
        default=None, description="Host of the endpoint that answered (the GenAI conventions' `server.address`)."
    )
    server_port: int | None = None
