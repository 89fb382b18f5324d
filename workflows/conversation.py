"""One conversation with the IDE assistant, as a Temporal workflow.

The workflow owns the session (workflows/session.py): its history, current agent, approvals and outstanding tool
calls. Inputs arrive as signals or as updates (same payloads, same code path); handlers only check and record them,
and the main loop processes user messages and switch requests one at a time, in arrival order (invariant I5). A turn
(turn.py) calls the LLM through an activity, runs the tool calls of each answer in order, and parks on durable waits
(waits.py): a human decision on a risky call (with an optional expiry timer) and the IDE's result (with a lease
timer). Restarts of the worker, the API or the Temporal server lose none of these waits. Plans run in
plan_runner.py; a run hands over to the next in continuation.py.

Double-texting policy: a user message that arrives while a tool call is outstanding is queued and processed once
the current turn has closed every call, so the provider never sees an unpaired history (scenario 18).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TypeVar

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from temporalio.contrib.workflow_streams import WorkflowStream

    from workflows import tool_messages
    from workflows.content import RAW_INPUT_LIMIT, clip_tool_result, clip_user_message, is_blank
    from workflows.continuation import (
        HISTORY_SIZE_LIMIT,
        archive_older_turns,
        carried_state,
        publisher_ttl,
        trim_event_log,
    )
    from workflows.grants import remember_refusal
    from workflows.ledger import RecentIds, invalid_input, too_large_inline
    from workflows.llm_calls import LlmCalls
    from workflows.model import (
        APPROVALS_QUERY,
        CANCEL_TURN_SIGNAL,
        CANCEL_TURN_UPDATE,
        CONVERSATION_WORKFLOW,
        GRANTS_QUERY,
        HITL_DECISION_SIGNAL,
        HITL_DECISION_UPDATE,
        PENDING_APPROVALS_QUERY,
        PLAN_DECISION_SIGNAL,
        PLAN_DECISION_UPDATE,
        REVOKE_GRANT_SIGNAL,
        REVOKE_GRANT_UPDATE,
        STATE_QUERY,
        SWITCH_AGENT_SIGNAL,
        SWITCH_AGENT_UPDATE,
        TOOL_RESULT_SIGNAL,
        TOOL_RESULT_UPDATE,
        TRANSCRIPT_QUERY,
        UNKNOWN_GRANT_ERROR,
        USER_MESSAGE_SIGNAL,
        USER_MESSAGE_UPDATE,
        AgentType,
        ApprovalGrant,
        CancelTurn,
        ChunkType,
        HitlDecision,
        InputReceipt,
        PendingApproval,
        PlanDecision,
        RevokeGrant,
        SessionState,
        SessionStatus,
        SwitchAgent,
        ToolResult,
        TranscriptView,
        TurnInput,
        UserMessage,
    )
    from workflows.patches import BASELINE, has_change
    from workflows.plan_runner import PlanRunner
    from workflows.runtime_tools import RuntimeTools
    from workflows.session import Session
    from workflows.state import CarriedState, ConversationInput
    from workflows.turn import TurnEnd, TurnRunner
    from workflows.waits import ToolWaits

CANCELLABLE_TURNS_PATCH = "cancellable-turns"
# Sessions started before the transcript was archived at continue-as-new carry their whole history (and replay so).
TRANSCRIPT_ARCHIVE_PATCH = "transcript-archive"
CONTINUE_ON_INPUT_PATCH = "continue-as-new-on-input"
# Fewer workflow tasks, activities and history events per turn, and inputs answered with the events they caused
# (Session.lean says what changes); runs started before replay as they ran. It is the baseline (workflows/patches.py).
LEAN_TURNS_PATCH = BASELINE
# A run also ends once it has `SessionConfig.continue_as_new_after_events` history events; runs that reached that
# many before this check existed replay as they ran (the marker is asked only once the count is reached).
EVENTS_LIMIT_PATCH = "continue-as-new-by-events"

# The newest message ids remembered for deduplication (older repeats would run again: days of conversation back).
MESSAGE_IDS_KEPT = 1000
# Inputs waiting behind the current turn; more are refused (update) or dropped (signal) with a clear reason.
QUEUED_INPUTS_LIMIT = 50

P = TypeVar("P")


@workflow.defn(name=CONVERSATION_WORKFLOW)
class ConversationWorkflow:
    """A session of the IDE assistant: routing, agent turns, approvals and IDE tool calls."""

    @workflow.init
    def __init__(self, input: ConversationInput) -> None:
        carried = input.carried or CarriedState(created_at=workflow.now())
        self._stream = WorkflowStream(input.stream_state)
        self._session = session = Session(input, carried, self._stream)
        self._seen_message_ids = RecentIds(carried.seen_message_ids, MESSAGE_IDS_KEPT)
        self._cancel_request: CancelTurn | None = None
        self._turns = 0
        # Known here, before any handler runs: the first message of an update-with-start is handled before `run`.
        session.lean = session.emitter.at_rest_only = workflow.patched(LEAN_TURNS_PATCH)
        self._running = False
        llm = LlmCalls(
            session.id,
            session.config,
            session.counters,
            session.metrics,
            session.projection,
            session.traces,
            session.pauses,
        )
        self._plans = PlanRunner(session)
        self._turn = TurnRunner(session, llm, ToolWaits(session), RuntimeTools(session), self._plans)

    @workflow.run
    async def run(self, input: ConversationInput) -> None:
        session = self._session
        self._running = True
        if session.projection.start(input.config.projection_enabled, lean=session.lean):
            session.history.listener = session.projection.message
            if input.carried is None:
                session.project_session()
        # Sessions started before turns could be cancelled replay the way they ran: awaited directly.
        cancellable = has_change(CANCELLABLE_TURNS_PATCH, baseline=session.lean)
        self._archives_transcript = has_change(TRANSCRIPT_ARCHIVE_PATCH, baseline=session.lean)
        # A run used to end as soon as a turn made it due, so the gateway's next message often reached a run that was
        # closing and was refused and retried (about a second at the client). It now ends when the next input
        # arrives: the run accepts it at once, then hands it over with the rest.
        continues_on_input = has_change(CONTINUE_ON_INPUT_PATCH, baseline=session.lean)
        while True:
            if continues_on_input:
                await session.wait_for_input(lambda: bool(session.inbox))
            else:
                await session.wait_for_input(lambda: bool(session.inbox) or self._should_continue_as_new())
            if self._should_continue_as_new():
                await self._continue_as_new()
            item = session.inbox.popleft()
            session.status = SessionStatus.RUNNING
            if cancellable:
                await self._run_cancellable(item)
            else:
                await self._process(item)
            session.status = SessionStatus.IDLE
            session.last_activity = workflow.now()
            self._turns += 1
            session.project_session()
            session.emitter.publish_observability()

    async def _process(self, item: UserMessage | SwitchAgent) -> None:
        # In the trace of the request that sent the input (workflows/tracing.py).
        with self._session.traces.turn(item, lambda: self._session.agent):
            if isinstance(item, UserMessage):
                await self._on_user_message(item)
            else:
                self._on_switch_request(item)

    async def _run_cancellable(self, item: UserMessage | SwitchAgent) -> None:
        """Run one input as a task that a `cancel_turn` can stop wherever it waits (LLM call, approval, IDE).

        A bug that escapes the turn ends the turn, not the session: the turn's open calls are closed with an error
        result, an `error` event tells the client, and the next input is handled as usual. (A bug outside a turn
        fails the workflow task instead, which Temporal retries: deploying a fix then resumes the session where it
        stopped. No exception type fails the workflow itself: a failed workflow is a session lost for good.)
        """
        self._cancel_request = None
        turn = asyncio.create_task(self._process(item))
        await workflow.wait_condition(lambda: turn.done() or self._cancel_request is not None)
        if turn.done():
            error = turn.exception()
            if error is not None:
                self._fail_turn(error)
            return
        turn.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await turn
        request, self._cancel_request = self._cancel_request, None
        reason = request.reason if request else None
        text = tool_messages.cancelled(reason)
        self._session.close_open_turn(text, "cancelled", decided_by="cancel_turn", feedback=reason)
        self._session.emit(
            ChunkType.STATUS,
            content="The turn was cancelled",
            metadata={"cancelled": True, "reason": reason},
            is_final=True,
        )

    def _fail_turn(self, error: BaseException) -> None:
        workflow.logger.error("The turn failed with %s: %s", type(error).__name__, error, exc_info=error)
        text = f"{type(error).__name__}: {str(error)[:300]}"
        self._session.counters.turn_failures += 1
        self._session.close_open_turn(
            tool_messages.turn_failed(text), "failed", decided_by="turn_failed", feedback=text
        )
        self._session.emit(
            ChunkType.ERROR,
            content=f"The turn failed inside the runtime ({text}); the session goes on with your next message.",
            error=text,
            metadata={"code": "turn_failed"},
            is_final=True,
        )

    # --- inputs: each is a signal (fire and forget) and an update (validated, answered) over one code path ---

    # A signal cannot be refused, so an oversized inline input (from a caller that bypasses the client, which stores
    # large content by reference) is cut with a visible marker there; the update refuses it with a clear error.

    @workflow.signal(name=USER_MESSAGE_SIGNAL)
    def user_message(self, message: UserMessage) -> None:
        self._record_quietly(self._check_user_message, self._accept_user_message, clip_user_message(message))

    @workflow.update(name=USER_MESSAGE_UPDATE)
    async def submit_user_message(self, message: UserMessage) -> InputReceipt:
        return await self._answer(self._accept_user_message, message)

    @submit_user_message.validator
    def _validate_user_message(self, message: UserMessage) -> None:
        self._check_user_message(message)

    @workflow.signal(name=TOOL_RESULT_SIGNAL)
    def tool_result(self, result: ToolResult) -> None:
        ledger = self._session.ledger
        self._session.traces.decision_arrived(result.call_id)  # a result for a call awaiting approval approves it
        self._record_quietly(ledger.check_tool_result, ledger.accept_tool_result, clip_tool_result(result))

    @workflow.update(name=TOOL_RESULT_UPDATE)
    async def submit_tool_result(self, result: ToolResult) -> InputReceipt:
        self._session.traces.decision_arrived(result.call_id)
        return await self._answer(self._session.ledger.accept_tool_result, result)

    @submit_tool_result.validator
    def _validate_tool_result(self, result: ToolResult) -> None:
        self._session.ledger.check_tool_result(result)

    @workflow.signal(name=HITL_DECISION_SIGNAL)
    def hitl_decision(self, decision: HitlDecision) -> None:
        self._session.traces.decision_arrived(decision.call_id)
        self._record_quietly(self._check_decision, self._session.ledger.accept_decision, decision)

    @workflow.update(name=HITL_DECISION_UPDATE)
    async def submit_hitl_decision(self, decision: HitlDecision) -> InputReceipt:
        self._session.traces.decision_arrived(decision.call_id)
        return await self._answer(self._session.ledger.accept_decision, decision)

    @submit_hitl_decision.validator
    def _validate_hitl_decision(self, decision: HitlDecision) -> None:
        self._check_decision(decision)

    @workflow.signal(name=REVOKE_GRANT_SIGNAL)
    def revoke_grant(self, request: RevokeGrant) -> None:
        self._record_quietly(self._check_revoke, self._accept_revoke, request)

    @workflow.update(name=REVOKE_GRANT_UPDATE)
    def submit_revoke_grant(self, request: RevokeGrant) -> InputReceipt:
        return self._accept_revoke(request)

    @submit_revoke_grant.validator
    def _validate_revoke_grant(self, request: RevokeGrant) -> None:
        self._check_revoke(request)

    @workflow.signal(name=SWITCH_AGENT_SIGNAL)
    def switch_agent(self, request: SwitchAgent) -> None:
        self._record_quietly(self._check_switch, self._accept_switch, request)

    @workflow.update(name=SWITCH_AGENT_UPDATE)
    async def submit_switch_agent(self, request: SwitchAgent) -> InputReceipt:
        return await self._answer(self._accept_switch, request)

    @submit_switch_agent.validator
    def _validate_switch_agent(self, request: SwitchAgent) -> None:
        self._check_switch(request)

    @workflow.signal(name=PLAN_DECISION_SIGNAL)
    def plan_decision(self, decision: PlanDecision) -> None:
        ledger = self._session.ledger
        self._session.traces.decision_arrived(decision.approval_request_id)
        self._record_quietly(ledger.check_plan_decision, ledger.accept_plan_decision, decision)

    @workflow.update(name=PLAN_DECISION_UPDATE)
    async def submit_plan_decision(self, decision: PlanDecision) -> InputReceipt:
        self._session.traces.decision_arrived(decision.approval_request_id)
        return await self._answer(self._session.ledger.accept_plan_decision, decision)

    @submit_plan_decision.validator
    def _validate_plan_decision(self, decision: PlanDecision) -> None:
        self._session.ledger.check_plan_decision(decision)

    @workflow.signal(name=CANCEL_TURN_SIGNAL)
    def cancel_turn(self, request: CancelTurn) -> None:
        self._accept_cancel(request)

    @workflow.update(name=CANCEL_TURN_UPDATE)
    async def submit_cancel_turn(self, request: CancelTurn) -> InputReceipt:
        return await self._answer(self._accept_cancel, request)

    # --- queries ---

    @workflow.query(name=STATE_QUERY)
    def state(self) -> SessionState:
        session = self._session
        return SessionState(
            session_id=session.id,
            title=session.title(),
            status=session.status,
            current_agent=session.agent,
            pending_approvals=self.pending_approvals(),
            outstanding_calls=session.open_calls(),
            queued_inputs=len(session.inbox),
            message_count=len(session.history),
            switches=session.switches,
            counters=session.counters,
            plans=session.plans,
            created_at=session.created_at,
            last_activity=session.last_activity,
            run=session.run,
        )

    @workflow.query(name=TRANSCRIPT_QUERY)
    def transcript(self) -> TranscriptView:
        """The conversation: this run's messages, and the archived rest (the client reads it from the content store)."""
        history = self._session.history
        return TranscriptView(archive=self._session.transcript, first_seq=history.first_seq, messages=history.messages)

    @workflow.query(name=PENDING_APPROVALS_QUERY)
    def pending_approvals(self) -> list[PendingApproval]:
        return self._session.ledger.pending()

    @workflow.query(name=APPROVALS_QUERY)
    def approvals(self) -> list[PendingApproval]:
        return list(self._session.ledger.approvals.values())

    @workflow.query(name=GRANTS_QUERY)
    def approval_grants(self) -> list[ApprovalGrant]:
        """The session's remembered decisions: the active ones, then the newest revoked ones."""
        return self._session.grants.carried()

    # --- checking and recording inputs (no await: handlers never interleave with the turn) ---

    async def _answer(self, accept: Callable[[P], InputReceipt], payload: P) -> InputReceipt:
        """Accept an input for its update: the receipt says where in the stream the input's events start, and (in
        runs with `lean-turns`) carries the events published until the conversation it woke pauses again, in the
        same workflow task, or, when the input asks, until its first events (workflows/pauses.py). An input that woke
        nothing is answered at once; the message that starts a session (update-with-start, handled before the run
        begins) wakes the run that is about to begin."""
        session = self._session
        offset = session.emitter.offset()
        receipt = self._accept(accept, payload).model_copy(update={"offset": offset})
        pauses = session.pauses
        woke = pauses.woken() or not self._running
        if not session.lean or not receipt.accepted or receipt.duplicate or receipt.queued or not woke:
            return receipt
        through = isinstance(payload, TurnInput) and payload.wait_for_events
        await workflow.wait_condition(
            pauses.answerable(lambda: session.emitter.offset() > offset, through_activities=through)
        )
        return receipt.model_copy(update={"events": session.emitter.since(offset)})

    def _record_quietly(self, check: Callable[[P], None], accept: Callable[[P], InputReceipt], payload: P) -> None:
        """Signals cannot answer, so an input the update validator would reject is logged and dropped."""
        try:
            check(payload)
        except ApplicationError as err:
            workflow.logger.warning("Dropped %s: %s", type(payload).__name__, err)
            return
        self._accept(accept, payload)

    def _accept(self, accept: Callable[[P], InputReceipt], payload: P) -> InputReceipt:
        """Record an input (signal or update); one that continues a turn also says whether tokens go out live."""
        if isinstance(payload, TurnInput):
            self._session.live_tokens = payload.live_tokens
        return accept(payload)

    def _check_user_message(self, message: UserMessage) -> None:
        if is_blank(message.content) and message.agent_type is None:
            raise invalid_input("a user message needs content or an agent_type")
        if isinstance(message.content, str) and len(message.content) > RAW_INPUT_LIMIT:
            raise too_large_inline("the user message", len(message.content))
        if message.agent_type is not None:
            self._check_agent_available(message.agent_type)
        self._check_room_in_queue()

    def _check_room_in_queue(self) -> None:
        queued = len(self._session.inbox)
        if queued >= QUEUED_INPUTS_LIMIT:
            raise invalid_input(
                f"the session already has {queued} inputs queued behind its current turn; wait for it to "
                "answer (or cancel the turn) before sending more"
            )

    def _accept_user_message(self, message: UserMessage) -> InputReceipt:
        if message.message_id is not None:
            if message.message_id in self._seen_message_ids:
                return InputReceipt(duplicate=True, detail=f"message {message.message_id} was already received")
            self._seen_message_ids.add(message.message_id)
        queued = self._session.status is not SessionStatus.IDLE or bool(self._session.inbox)
        self._session.inbox.append(message)
        self._session.traces.input_accepted(message)
        return InputReceipt(queued=queued, detail="queued behind the current turn" if queued else "")

    def _check_decision(self, decision: HitlDecision) -> None:
        """The ledger's checks, and that an approval to be remembered can be (a pattern derived from its call)."""
        session = self._session
        session.ledger.check_decision(decision)
        remember = decision.remember
        if remember is None:
            return
        approval = session.ledger.approvals[decision.call_id]
        refusal = remember_refusal(approval.tool_name, approval.arguments, remember)
        if refusal is not None:
            raise invalid_input(f"this approval cannot be remembered: {refusal}")
        if remember.project is not None and session.project not in (None, remember.project):
            raise invalid_input(
                f"this session belongs to project {session.project!r}, not {remember.project!r}: remember it there"
            )

    def _check_revoke(self, request: RevokeGrant) -> None:
        if self._session.grants.get(request.grant_id) is None:
            raise ApplicationError(
                f"unknown grant {request.grant_id!r} in this session", type=UNKNOWN_GRANT_ERROR, non_retryable=True
            )

    def _accept_revoke(self, request: RevokeGrant) -> InputReceipt:
        revoked = self._session.grants.revoke(request.grant_id, workflow.now(), request.reason)
        if revoked is None:
            return InputReceipt(duplicate=True, detail=f"grant {request.grant_id} is already revoked")
        return InputReceipt(detail=f"revoked {revoked.description}")

    def _accept_cancel(self, request: CancelTurn) -> InputReceipt:
        if self._session.status is SessionStatus.IDLE:
            return InputReceipt(accepted=False, detail="no turn is running")
        if self._cancel_request is not None:
            return InputReceipt(duplicate=True, detail="the turn is already being cancelled")
        self._cancel_request = request
        self._session.traces.decision_arrived("cancel_turn")
        return InputReceipt(detail="the running turn is being cancelled")

    def _check_switch(self, request: SwitchAgent) -> None:
        self._check_agent_available(request.agent_type)
        self._check_room_in_queue()

    def _accept_switch(self, request: SwitchAgent) -> InputReceipt:
        queued = self._session.status is not SessionStatus.IDLE or bool(self._session.inbox)
        self._session.inbox.append(request)
        self._session.traces.input_accepted(request)
        return InputReceipt(queued=queued)

    def _check_agent_available(self, agent: AgentType) -> None:
        if agent not in self._session.agents:
            raise invalid_input(f"agent '{agent.value}' is not available in this session")

    # --- processing: one input at a time ---

    async def _on_user_message(self, message: UserMessage) -> None:
        session = self._session
        session.project = message.project or session.project
        if message.agent_type is not None:
            self._switch_explicitly(message.agent_type, "Requested with the user message", final=False)
        if is_blank(message.content):
            session.emit(ChunkType.STATUS, content=f"Current agent: {session.agent.value}", is_final=True)
            return
        session.history.add_user(message.content, message_id=session.new_id(), at=workflow.now())
        session.title_text = session.title()
        if await self._turn.run() is TurnEnd.PLAN_APPROVED:
            await self._plans.execute(session.plans[-1], self._turn.run, self._next_user_message)

    def _on_switch_request(self, request: SwitchAgent) -> None:
        reason = request.reason or "Requested by the user"
        self._switch_explicitly(request.agent_type, reason, final=True, confidence=request.confidence)

    def _switch_explicitly(self, target: AgentType, reason: str, *, final: bool, confidence: str | None = None) -> None:
        # Asking for the current agent is not an error for explicit requests: answer and change nothing.
        session = self._session
        if not session.switch_to(target, reason, source="explicit", final=final, confidence=confidence):
            session.emit(
                ChunkType.AGENT_SWITCHED,
                content=f"Already using the {target.value} agent",
                metadata={"from_agent": session.agent.value, "to_agent": target.value, "reason": reason},
                is_final=final,
            )

    async def _next_user_message(self) -> UserMessage:
        """Inside a plan, the answer to a follow-up question: the next user message (explicit switches apply)."""
        inbox = self._session.inbox
        while True:
            await self._session.wait_for_input(lambda: bool(inbox))
            item = inbox.popleft()
            if isinstance(item, SwitchAgent):
                self._on_switch_request(item)
                continue
            self._session.project = item.project or self._session.project
            if item.agent_type is not None:
                self._switch_explicitly(item.agent_type, "Requested with the user message", final=False)
            if not is_blank(item.content):
                return item

    # --- continue-as-new (workflows/continuation.py) ---

    def _should_continue_as_new(self) -> bool:
        """Only between turns, so no wait is ever cut in half; queued inputs travel in the carried state.

        Besides Temporal's suggestion (history size) and the configured turn limit, a run ends once its messages
        add `HISTORY_SIZE_LIMIT` to workflow state: every LLM call sends them, so this keeps the cost of a turn flat;
        and once it has `continue_as_new_after_events` history events: a worker without the session in its cache
        replays the whole run before it answers, and Temporal's own suggestion (4,096 events) takes seconds.
        """
        history = self._session.history
        if history.open_calls:
            return False
        config = self._session.config
        limit = config.continue_as_new_after_turns
        info = workflow.info()
        if info.is_continue_as_new_suggested() or (limit is not None and self._turns >= limit):
            return True
        if info.get_current_history_length() >= config.continue_as_new_after_events and workflow.patched(
            EVENTS_LIMIT_PATCH
        ):
            return True
        # Not before this run's first turn: a carried history that could not be archived must not loop.
        return self._archives_transcript and self._turns > 0 and history.size > HISTORY_SIZE_LIMIT

    async def _continue_as_new(self) -> None:
        """Hand over to a new run with bounded, structured state (never a summary).

        Nothing may be in flight when the run hands over (an activity completing during the continue-as-new task
        fails it with UNHANDLED_COMMAND): approval webhooks in flight finish and the projection's writer stops first,
        the transcript is archived, and the carried state is built only after every handler has finished, so an
        input accepted meanwhile travels too.
        """
        session = self._session
        session.pauses.handing_over = True
        await session.reminders.drain()
        await session.projection.quiesce()
        history = session.history.messages, session.history.first_seq
        if self._archives_transcript:
            history = await archive_older_turns(session)
        trim_event_log(self._stream)
        await self._stream.continue_as_new(
            lambda stream_state: [
                ConversationInput(
                    session_id=session.id,
                    config=session.config,
                    carried=carried_state(session, *history, self._seen_message_ids),
                    stream_state=stream_state,
                )
            ],
            publisher_ttl=publisher_ttl(session),
        )
