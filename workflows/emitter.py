"""A session's events: published on its stream, kept in the projection's audit log, and at every wait point shown in
the Temporal Web UI (current details and, when registered, search attributes).

Clients follow the stream (`temporalio.contrib.workflow_streams`, topic `events`) from an offset; a chunk with
`is_final=true` is a wait point, where an HTTP stream ends (bug B11).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from temporalio import workflow
from temporalio.contrib.workflow_streams import WorkflowStream

from workflows.model import (
    EVENTS_TOPIC,
    AgentType,
    ChunkType,
    OutstandingCall,
    PendingApproval,
    SessionStatus,
    StreamChunk,
)
from workflows.observability import current_details, fingerprint, search_attribute_updates
from workflows.projection import Projection


@dataclass(frozen=True)
class SessionView:
    """What an operator is shown of a session: its status, agent, pending approvals, open calls and queue."""

    status: SessionStatus
    agent: AgentType
    pending: list[PendingApproval]
    open_calls: list[OutstandingCall]
    queued: int


class Emitter:
    """Publishes a session's events and keeps the Web UI's view of it current.

    Args:
        session_id: The session.
        stream: The workflow's stream (constructed in the workflow's `__init__`, as the library requires).
        projection: The outbox; every event is also kept in the projection's audit log.
        search_attributes: Keep the custom search attributes current (only once they are registered).
        view: The session as the Web UI shows it, read at every wait point.
    """

    def __init__(
        self,
        session_id: str,
        stream: WorkflowStream,
        projection: Projection,
        *,
        search_attributes: bool,
        view: Callable[[], SessionView],
    ) -> None:
        self._session_id = session_id
        self._events = stream.topic(EVENTS_TOPIC, type=StreamChunk)
        self._projection = projection
        self._search_attributes = search_attributes
        self._view = view
        self._published_attributes: tuple[tuple[str, str], ...] = ()

    def emit(self, type: ChunkType, **fields: Any) -> None:
        chunk = StreamChunk(type=type, session_id=self._session_id, **fields)
        self._events.publish(chunk)
        if chunk.is_final:
            self.publish_observability()
        self._projection.event(chunk)

    def publish_observability(self) -> None:
        """Refresh the Web UI's current details and, when registered, the search attributes (only on change)."""
        view = self._view()
        workflow.set_current_details(
            current_details(view.status, view.agent, view.pending, view.open_calls, view.queued)
        )
        if not self._search_attributes:
            return
        updates = search_attribute_updates(view.status, view.agent, view.pending)
        if fingerprint(updates) != self._published_attributes:
            workflow.upsert_search_attributes(updates)
            self._published_attributes = fingerprint(updates)
