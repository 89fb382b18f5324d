"""A session's events: published on its stream, kept in the projection's audit log, and at every wait point shown in
the Temporal Web UI (current details and, when registered, search attributes).

Clients follow the stream (`temporalio.contrib.workflow_streams`, topic `events`) from an offset; a chunk with
`is_final=true` is a wait point, where an HTTP stream ends (bug B11). The newest chunks are also kept here with
their offsets, so the update that delivered an input can return the events it caused (workflows/pauses.py).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from temporalio import workflow
from temporalio.contrib.workflow_streams import WorkflowStream

from workflows.model import (
    EVENTS_TOPIC,
    STREAM_OFFSET_QUERY,
    ChunkType,
    EmittedChunk,
    SessionStatus,
    StreamChunk,
)
from workflows.observability import SessionView, current_details, fingerprint, search_attribute_updates
from workflows.projection import Projection, approx_size

# The newest chunks kept with their offsets, and how much of them one input's answer carries at most (the rest is
# read from the stream).
RECENT_CHUNKS = 64
ANSWER_BYTES = 256 * 1024


class Emitter:
    """Publishes a session's events and keeps the Web UI's view of it current.

    Args:
        session_id: The session.
        stream: The workflow's stream (constructed in the workflow's `__init__`, as the library requires).
        projection: The outbox; every event is also kept in the projection's audit log.
        search_attributes: Keep the custom search attributes current (only once they are registered).
        view: The session as the Web UI shows it, read at every wait point.
        waiting_call: Whether the attributes include the waiting call's id and tool; asked (once, lazily: it may
            decide a patch) the first time attributes are published.

    Attributes:
        at_rest_only: Change the search attributes only when the session waits, not while a turn runs (runs
            started with `lean-turns`): a turn's last chunk is published while it still runs, and the attributes
            it would show are replaced in the same workflow task, for two history events per turn.
    """

    def __init__(
        self,
        session_id: str,
        stream: WorkflowStream,
        projection: Projection,
        *,
        search_attributes: bool,
        view: Callable[[], SessionView],
        waiting_call: Callable[[], bool] = lambda: False,
    ) -> None:
        self._session_id = session_id
        self._events = stream.topic(EVENTS_TOPIC, type=StreamChunk)
        self._projection = projection
        self._search_attributes = search_attributes
        self._view = view
        self._waiting_call = waiting_call
        self._published_attributes: tuple[tuple[str, str], ...] = ()
        # The stream's own offset query handler (temporalio.contrib.workflow_streams): the next offset.
        self._next_offset: Callable[[], int] = workflow.get_query_handler(STREAM_OFFSET_QUERY)  # type: ignore[assignment]
        self._recent: deque[EmittedChunk] = deque(maxlen=RECENT_CHUNKS)
        self.at_rest_only = False

    def offset(self) -> int:
        """The offset the next event will have."""
        return self._next_offset()

    def since(self, offset: int) -> list[EmittedChunk]:
        """The chunks published from `offset` on, as long as they follow one another (a token delta published by
        the LLM activity in between ends the run) and fit in `ANSWER_BYTES` (at least one)."""
        found: list[EmittedChunk] = []
        size = 0
        for emitted in self._recent:
            if emitted.offset < offset:
                continue
            if emitted.offset != offset + len(found):
                break
            size += approx_size(emitted.chunk)
            if found and size > ANSWER_BYTES:
                break
            found.append(emitted)
        return found

    def emit(self, type: ChunkType, **fields: Any) -> None:
        chunk = StreamChunk(type=type, session_id=self._session_id, **fields)
        self._recent.append(EmittedChunk(offset=self.offset(), chunk=chunk))
        self._events.publish(chunk)
        if chunk.is_final:
            self.publish_observability()
        self._projection.event(chunk)

    def publish_observability(self) -> None:
        """Refresh the Web UI's current details and, when registered, the search attributes (only on change)."""
        view = self._view()
        workflow.set_current_details(current_details(view))
        if not self._search_attributes or (self.at_rest_only and view.status is SessionStatus.RUNNING):
            return
        updates = search_attribute_updates(
            view.status, view.agent, view.pending, view.open_calls, with_waiting_call=self._waiting_call()
        )
        if fingerprint(updates) != self._published_attributes:
            workflow.upsert_search_attributes(updates)
            self._published_attributes = fingerprint(updates)
