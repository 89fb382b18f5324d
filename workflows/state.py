"""The conversation workflow's input: a session's id and configuration, and on continue-as-new everything the new
run starts from. Every field of the carried state is bounded (workflows/conversation.py says how)."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field
from temporalio.contrib.workflow_streams import WorkflowStreamState

from workflows.model import (
    AgentSwitchRecord,
    AgentType,
    ApprovalGrant,
    ChatMessage,
    ContractModel,
    ConversationConfig,
    PendingApproval,
    Plan,
    SessionCounters,
    SwitchAgent,
    TranscriptArchive,
    UserMessage,
)
from workflows.records import ProjectionRecord


class CarriedState(ContractModel):
    """Everything a session needs after continue-as-new: structured state, never an LLM summary.

    Every field is bounded (workflows/conversation.py says how), so the input of a new run does not grow with the
    length of the session or the size of what its tools returned.
    """

    history: list[ChatMessage] = Field(default_factory=list)
    transcript: TranscriptArchive | None = Field(default=None, description="Older messages, in the content store.")
    first_seq: int = Field(default=0, ge=0, description="Position of `history[0]` in the whole conversation.")
    answered_call_ids: list[str] = Field(
        default_factory=list, description="The newest answered call ids, so late duplicates are still recognised."
    )
    title: str | None = None
    switch_count: int = Field(
        default=0, ge=0, description="Switches in the whole session (`switches` keeps the newest)."
    )
    context_tokens: int | None = Field(
        default=None, description="A smaller context window learned from the provider (context_length_exceeded)."
    )
    current_agent: AgentType = AgentType.ORCHESTRATOR
    approvals: list[PendingApproval] = Field(default_factory=list)
    switches: list[AgentSwitchRecord] = Field(default_factory=list)
    seen_message_ids: list[str] = Field(default_factory=list, description="Oldest first; the newest are kept.")
    queued_inputs: list[UserMessage | SwitchAgent] = Field(default_factory=list)
    plans: list[Plan] = Field(default_factory=list)
    counters: SessionCounters = Field(default_factory=SessionCounters)
    created_at: datetime | None = None
    runs: int = Field(default=1, description="How many workflow runs this session has had (continue-as-new chain).")
    unprojected: list[ProjectionRecord] = Field(
        default_factory=list, description="Projection records not yet written (the database was down)."
    )
    grants: list[ApprovalGrant] = Field(
        default_factory=list, description="The session's remembered decisions (and the newest revoked ones)."
    )
    project: str | None = Field(default=None, description="The project whose remembered decisions apply.")


class ConversationInput(ContractModel):
    session_id: str = Field(min_length=1)
    config: ConversationConfig = Field(default_factory=ConversationConfig)
    carried: CarriedState | None = None
    stream_state: WorkflowStreamState | None = None
