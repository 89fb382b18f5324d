"""One conversation with the IDE assistant, as a Temporal workflow.

The workflow owns the session: its history, current agent, approvals and outstanding tool calls. Inputs arrive
as signals or as updates (same payloads, same code path); handlers only check and record them, and the main loop
processes user messages and switch requests one at a time, in arrival order (invariant I5). A turn calls the LLM
through an activity, runs the tool calls of each answer in order, and parks on durable waits: a human decision
on a risky call (with an optional expiry timer) and the IDE's result (with a lease timer). Restarts of the worker,
the API or the Temporal server lose none of these waits.

Double-texting policy: a user message that arrives while a tool call is outstanding is queued and processed once
the current turn has closed every call, so the provider never sees an unpaired history (scenario 18).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from temporalio.contrib.workflow_streams import WorkflowStream

    from workflows import tool_messages
    from workflows.agents import AGENTS, Agent, available_agents, check_tool_call
    from workflows.calculator import CalculatorError, calculate
    from workflows.content import (
        RAW_INPUT_LIMIT,
        Content,
        clip_tool_result,
        clip_user_message,
        is_blank,
        marker_ref,
        preview_of,
        text_or_preview,
    )
    from workflows.history import ConversationHistory, unique_call_ids
    from workflows.ledger import CallLedger, RecentIds, invalid_input, too_large_inline
    from workflows.llm_calls import LlmCalls, error_text, learned_window
    from workflows.metrics import SessionMetrics
    from workflows.model import (
        APPROVALS_QUERY,
        ARCHIVE_TRANSCRIPT_ACTIVITY,
        CANCEL_TURN_SIGNAL,
        CANCEL_TURN_UPDATE,
        CONVERSATION_WORKFLOW,
        EVENTS_TOPIC,
        HITL_DECISION_SIGNAL,
        HITL_DECISION_UPDATE,
        PENDING_APPROVALS_QUERY,
        PLAN_DECISION_SIGNAL,
        PLAN_DECISION_UPDATE,
        STATE_QUERY,
        SWITCH_AGENT_SIGNAL,
        SWITCH_AGENT_UPDATE,
        TOOL_RESULT_SIGNAL,
        TOOL_RESULT_UPDATE,
        TRANSCRIPT_QUERY,
        USER_MESSAGE_SIGNAL,
        USER_MESSAGE_UPDATE,
        AgentSwitchRecord,
        AgentType,
        ApprovalStatus,
        ArchiveTranscriptInput,
        CallStatus,
        CancelTurn,
        CarriedState,
        ChatMessage,
        ChunkType,
        ConversationInput,
        Decision,
        HitlDecision,
        InputReceipt,
        LlmReply,
        OutstandingCall,
        PendingApproval,
        Plan,
        PlanDecision,
        PlanDecisionKind,
        PlanStatus,
        SessionRecord,
        SessionState,
        SessionStatus,
        StreamChunk,
        SubtaskStatus,
        SwitchAgent,
        ToolCall,
        ToolResult,
        TranscriptArchive,
        TranscriptView,
        UserMessage,
    )
    from workflows.observability import current_details, fingerprint, search_attribute_updates
    from workflows.plans import PlanError, block_dependants, next_subtask, parse_plan, subtask_instruction, summary
    from workflows.policy import DEFAULT_APPROVAL_POLICY, evaluate
    from workflows.projection import Projection
    from workflows.routing import (
        ClassificationError,
        Route,
        parse_classification,
        route_by_keywords,
        single_agent_route,
    )
    from workflows.tools import CATALOGUE, Executor

CANCELLABLE_TURNS_PATCH = "cancellable-turns"
# Sessions started before the transcript was archived at continue-as-new carry their whole history (and replay so).
TRANSCRIPT_ARCHIVE_PATCH = "transcript-archive"
CONTINUE_ON_INPUT_PATCH = "continue-as-new-on-input"

# --- Bounds: what one run holds and carries over continue-as-new, whatever the session's length ---
# Continue-as-new once this run's messages add this much (characters) to workflow state: every LLM call sends them,
# so this also bounds the LLM activity's input.
HISTORY_SIZE_LIMIT = 96 * 1024
# Of those, the newest turns that stay in the next run (the rest is archived in the content store).
HISTORY_SIZE_KEPT = 24 * 1024
# Event log entries kept across continue-as-new (older offsets are answered from the retained base), and their size.
EVENTS_KEPT_ON_CONTINUE = 100
EVENTS_SIZE_KEPT_ON_CONTINUE = 48 * 1024
# Deduplication state of the stream's publishers (one per LLM call) is kept this long over continue-as-new; it must
# outlast a publisher's retries, and an LLM activity lives at most its timeout plus a margin (workflows/llm_calls.py).
STREAM_PUBLISHER_TTL = timedelta(minutes=5)
# The newest message ids remembered for deduplication (older repeats would run again: days of conversation back).
MESSAGE_IDS_KEPT = 1000
# Settled approvals carried so that late repeats are recognised; pending ones are always carried.
SETTLED_APPROVALS_KEPT = 200
# The newest agent switches and plans carried (the projection keeps them all).
SWITCHES_KEPT = 50
PLANS_KEPT = 10
# Inputs waiting behind the current turn; more are refused (update) or dropped (signal) with a clear reason.
QUEUED_INPUTS_LIMIT = 50
# Tool calls handled from one answer; the rest are closed with an error result at once (a model emitting dozens of
# calls in a loop must not tie a turn up for hours of approvals).
CALLS_PER_ANSWER_LIMIT = 32
ARCHIVE_TIMEOUT = timedelta(seconds=30)
ARCHIVE_RETRY = RetryPolicy(maximum_attempts=5, initial_interval=timedelta(milliseconds=500))

P = TypeVar("P")


@workflow.defn(name=CONVERSATION_WORKFLOW)
class ConversationWorkflow:
    """A session of the IDE assistant: routing, agent turns, approvals and IDE tool calls."""

    @workflow.init
    def __init__(self, input: ConversationInput) -> None:
        carried = input.carried or CarriedState(created_at=workflow.now())
        self._session_id = input.session_id
        self._config = input.config
        self._policy = input.config.approval_policy or DEFAULT_APPROVAL_POLICY
        self._agents = available_agents(input.config.multi_agent_mode)
        self._history = ConversationHistory(
            carried.history, first_seq=carried.first_seq, answered=carried.answered_call_ids
        )
        self._transcript: TranscriptArchive | None = carried.transcript
        self._title_text = carried.title
        self._context_tokens = carried.context_tokens or input.config.llm_context_tokens
        self._ledger = CallLedger(self._history, carried.approvals)
        self._agent = carried.current_agent
        self._switches = list(carried.switches)
        self._switch_count = max(carried.switch_count, len(self._switches))
        self._seen_message_ids = RecentIds(carried.seen_message_ids, MESSAGE_IDS_KEPT)
        self._inbox: deque[UserMessage | SwitchAgent] = deque(carried.queued_inputs)
        self._counters = carried.counters
        self._created_at = carried.created_at
        self._run = carried.runs
        self._turns = 0
        self._last_activity = workflow.now()
        self._outstanding: dict[str, OutstandingCall] = {}
        self._status = SessionStatus.IDLE
        self._stream = WorkflowStream(input.stream_state)
        self._events = self._stream.topic(EVENTS_TOPIC, type=StreamChunk)
        self._plans: list[Plan] = list(carried.plans)
        self._projection = Projection(input.session_id, carried.unprojected, counters=self._counters)
        self._cancel_request: CancelTurn | None = None
        self._answer_started_at = workflow.now()
        self._published_attributes: tuple[tuple[str, str], ...] = ()
        self._metrics = SessionMetrics()
        self._llm = LlmCalls(input.session_id, input.config, self._counters, self._metrics, self._projection)

    @workflow.run
    async def run(self, input: ConversationInput) -> None:
        if self._projection.start(input.config.projection_enabled):
            self._history.listener = self._projection.message
            if input.carried is None:
                self._project_session()
        # Sessions started before turns could be cancelled replay the way they ran: awaited directly.
        cancellable = workflow.patched(CANCELLABLE_TURNS_PATCH)
        self._archives_transcript = workflow.patched(TRANSCRIPT_ARCHIVE_PATCH)
        # A run used to end as soon as a turn made it due, so the gateway's next message often reached a run that was
        # closing and was refused and retried (about a second at the client). It now ends when the next input
        # arrives: the run accepts it at once, then hands it over with the rest.
        continues_on_input = workflow.patched(CONTINUE_ON_INPUT_PATCH)
        while True:
            if continues_on_input:
                await workflow.wait_condition(lambda: bool(self._inbox))
            else:
                await workflow.wait_condition(lambda: bool(self._inbox) or self._should_continue_as_new())
            if self._should_continue_as_new():
                await self._continue_as_new()
            item = self._inbox.popleft()
            self._status = SessionStatus.RUNNING
            if cancellable:
                await self._run_cancellable(item)
            else:
                await self._process(item)
            self._status = SessionStatus.IDLE
            self._last_activity = workflow.now()
            self._turns += 1
            self._project_session()
            self._publish_observability()

    async def _process(self, item: UserMessage | SwitchAgent) -> None:
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
        self._close_open_turn(tool_messages.cancelled(reason), "cancelled", decided_by="cancel_turn", feedback=reason)
        self._emit(
            ChunkType.STATUS,
            content="The turn was cancelled",
            metadata={"cancelled": True, "reason": reason},
            is_final=True,
        )

    def _fail_turn(self, error: BaseException) -> None:
        workflow.logger.error("The turn failed with %s: %s", type(error).__name__, error, exc_info=error)
        text = f"{type(error).__name__}: {str(error)[:300]}"
        self._counters.turn_failures += 1
        self._close_open_turn(tool_messages.turn_failed(text), "failed", decided_by="turn_failed", feedback=text)
        self._emit(
            ChunkType.ERROR,
            content=f"The turn failed inside the runtime ({text}); the session goes on with your next message.",
            error=text,
            metadata={"code": "turn_failed"},
            is_final=True,
        )

    def _close_open_turn(self, tool_text: str, outcome: str, *, decided_by: str, feedback: str | None) -> None:
        """Close everything a stopped turn left open, so pairing holds and nothing waits any more."""
        for call in self._history.open_calls:
            approval = self._ledger.approvals.get(call.id)
            if approval is not None and approval.status is ApprovalStatus.PENDING:
                self._settle(approval, ApprovalStatus.CANCELLED, decided_by=decided_by, feedback=feedback)
            self._ledger.decisions.pop(call.id, None)
            self._close_call(call, tool_text, outcome=outcome)
        for plan in self._plans:
            if plan.status in (PlanStatus.PENDING_APPROVAL, PlanStatus.IN_PROGRESS):
                for subtask in plan.subtasks:
                    if subtask.status in (SubtaskStatus.PENDING, SubtaskStatus.IN_PROGRESS):
                        subtask.status, subtask.error = SubtaskStatus.FAILED, outcome
                self._update_plan(plan, PlanStatus.CANCELLED if outcome == "cancelled" else PlanStatus.FAILED)
        self._outstanding.clear()

    # --- inputs: each is a signal (fire and forget) and an update (validated, answered) over one code path ---

    # A signal cannot be refused, so an oversized inline input (from a caller that bypasses the client, which stores
    # large content by reference) is cut with a visible marker there; the update refuses it with a clear error.

    @workflow.signal(name=USER_MESSAGE_SIGNAL)
    def user_message(self, message: UserMessage) -> None:
        self._record_quietly(self._check_user_message, self._accept_user_message, clip_user_message(message))

    @workflow.update(name=USER_MESSAGE_UPDATE)
    def submit_user_message(self, message: UserMessage) -> InputReceipt:
        return self._accept_user_message(message)

    @submit_user_message.validator
    def _validate_user_message(self, message: UserMessage) -> None:
        self._check_user_message(message)

    @workflow.signal(name=TOOL_RESULT_SIGNAL)
    def tool_result(self, result: ToolResult) -> None:
        self._record_quietly(self._ledger.check_tool_result, self._ledger.accept_tool_result, clip_tool_result(result))

    @workflow.update(name=TOOL_RESULT_UPDATE)
    def submit_tool_result(self, result: ToolResult) -> InputReceipt:
        return self._ledger.accept_tool_result(result)

    @submit_tool_result.validator
    def _validate_tool_result(self, result: ToolResult) -> None:
        self._ledger.check_tool_result(result)

    @workflow.signal(name=HITL_DECISION_SIGNAL)
    def hitl_decision(self, decision: HitlDecision) -> None:
        self._record_quietly(self._ledger.check_decision, self._ledger.accept_decision, decision)

    @workflow.update(name=HITL_DECISION_UPDATE)
    def submit_hitl_decision(self, decision: HitlDecision) -> InputReceipt:
        return self._ledger.accept_decision(decision)

    @submit_hitl_decision.validator
    def _validate_hitl_decision(self, decision: HitlDecision) -> None:
        self._ledger.check_decision(decision)

    @workflow.signal(name=SWITCH_AGENT_SIGNAL)
    def switch_agent(self, request: SwitchAgent) -> None:
        self._record_quietly(self._check_switch, self._accept_switch, request)

    @workflow.update(name=SWITCH_AGENT_UPDATE)
    def submit_switch_agent(self, request: SwitchAgent) -> InputReceipt:
        return self._accept_switch(request)

    @submit_switch_agent.validator
    def _validate_switch_agent(self, request: SwitchAgent) -> None:
        self._check_switch(request)

    @workflow.signal(name=PLAN_DECISION_SIGNAL)
    def plan_decision(self, decision: PlanDecision) -> None:
        self._record_quietly(self._ledger.check_plan_decision, self._ledger.accept_plan_decision, decision)

    @workflow.update(name=PLAN_DECISION_UPDATE)
    def submit_plan_decision(self, decision: PlanDecision) -> InputReceipt:
        return self._ledger.accept_plan_decision(decision)

    @submit_plan_decision.validator
    def _validate_plan_decision(self, decision: PlanDecision) -> None:
        self._ledger.check_plan_decision(decision)

    @workflow.signal(name=CANCEL_TURN_SIGNAL)
    def cancel_turn(self, request: CancelTurn) -> None:
        self._accept_cancel(request)

    @workflow.update(name=CANCEL_TURN_UPDATE)
    def submit_cancel_turn(self, request: CancelTurn) -> InputReceipt:
        return self._accept_cancel(request)

    # --- queries ---

    @workflow.query(name=STATE_QUERY)
    def state(self) -> SessionState:
        return SessionState(
            session_id=self._session_id,
            title=self._title(),
            status=self._status,
            current_agent=self._agent,
            pending_approvals=self.pending_approvals(),
            outstanding_calls=self._open_calls(),
            queued_inputs=len(self._inbox),
            message_count=len(self._history),
            switches=self._switches,
            counters=self._counters,
            plans=self._plans,
            created_at=self._created_at,
            last_activity=self._last_activity,
            run=self._run,
        )

    def _open_calls(self) -> list[OutstandingCall]:
        """Every call still without a tool message: the one being waited on, and the ones queued behind it."""
        queued_since = self._last_activity
        return [
            self._outstanding.get(call.id)
            or OutstandingCall(
                call_id=call.id,
                tool_name=call.name,
                arguments=call.arguments,
                agent=self._agent,
                status=CallStatus.QUEUED,
                since=queued_since,
            )
            for call in self._history.open_calls
        ]

    @workflow.query(name=TRANSCRIPT_QUERY)
    def transcript(self) -> TranscriptView:
        """The conversation: this run's messages, and the archived rest (the client reads it from the content store)."""
        return TranscriptView(
            archive=self._transcript, first_seq=self._history.first_seq, messages=self._history.messages
        )

    @workflow.query(name=PENDING_APPROVALS_QUERY)
    def pending_approvals(self) -> list[PendingApproval]:
        return self._ledger.pending()

    @workflow.query(name=APPROVALS_QUERY)
    def approvals(self) -> list[PendingApproval]:
        return list(self._ledger.approvals.values())

    # --- checking and recording inputs (no await: handlers never interleave with the turn) ---

    def _record_quietly(self, check: Callable[[P], None], accept: Callable[[P], InputReceipt], payload: P) -> None:
        """Signals cannot answer, so an input the update validator would reject is logged and dropped."""
        try:
            check(payload)
        except ApplicationError as err:
            workflow.logger.warning("Dropped %s: %s", type(payload).__name__, err)
            return
        accept(payload)

    def _check_user_message(self, message: UserMessage) -> None:
        if is_blank(message.content) and message.agent_type is None:
            raise invalid_input("a user message needs content or an agent_type")
        if isinstance(message.content, str) and len(message.content) > RAW_INPUT_LIMIT:
            raise too_large_inline("the user message", len(message.content))
        if message.agent_type is not None:
            self._check_agent_available(message.agent_type)
        self._check_room_in_queue()

    def _check_room_in_queue(self) -> None:
        if len(self._inbox) >= QUEUED_INPUTS_LIMIT:
            raise invalid_input(
                f"the session already has {len(self._inbox)} inputs queued behind its current turn; wait for it to "
                "answer (or cancel the turn) before sending more"
            )

    def _accept_user_message(self, message: UserMessage) -> InputReceipt:
        if message.message_id is not None:
            if message.message_id in self._seen_message_ids:
                return InputReceipt(duplicate=True, detail=f"message {message.message_id} was already received")
            self._seen_message_ids.add(message.message_id)
        queued = self._status is not SessionStatus.IDLE or bool(self._inbox)
        self._inbox.append(message)
        return InputReceipt(queued=queued, detail="queued behind the current turn" if queued else "")

    def _accept_cancel(self, request: CancelTurn) -> InputReceipt:
        if self._status is SessionStatus.IDLE:
            return InputReceipt(accepted=False, detail="no turn is running")
        if self._cancel_request is not None:
            return InputReceipt(duplicate=True, detail="the turn is already being cancelled")
        self._cancel_request = request
        return InputReceipt(detail="the running turn is being cancelled")

    def _check_switch(self, request: SwitchAgent) -> None:
        self._check_agent_available(request.agent_type)
        self._check_room_in_queue()

    def _accept_switch(self, request: SwitchAgent) -> InputReceipt:
        queued = self._status is not SessionStatus.IDLE or bool(self._inbox)
        self._inbox.append(request)
        return InputReceipt(queued=queued)

    def _check_agent_available(self, agent: AgentType) -> None:
        if agent not in self._agents:
            raise invalid_input(f"agent '{agent.value}' is not available in this session")

    # --- processing: one input at a time ---

    async def _on_user_message(self, message: UserMessage) -> None:
        if message.agent_type is not None:
            self._switch_explicitly(message.agent_type, "Requested with the user message", final=False)
        if is_blank(message.content):
            self._emit(ChunkType.STATUS, content=f"Current agent: {self._agent.value}", is_final=True)
            return
        self._history.add_user(message.content, message_id=self._new_id(), at=workflow.now())
        self._title_text = self._title()
        if await self._run_turn() is TurnEnd.PLAN_APPROVED:
            await self._execute_plan(self._plans[-1])

    def _on_switch_request(self, request: SwitchAgent) -> None:
        reason = request.reason or "Requested by the user"
        self._switch_explicitly(request.agent_type, reason, final=True, confidence=request.confidence)

    def _switch_explicitly(self, target: AgentType, reason: str, *, final: bool, confidence: str | None = None) -> None:
        # Asking for the current agent is not an error for explicit requests: answer and change nothing.
        if not self._switch_to(target, reason, source="explicit", final=final, confidence=confidence):
            self._emit(
                ChunkType.AGENT_SWITCHED,
                content=f"Already using the {target.value} agent",
                metadata={"from_agent": self._agent.value, "to_agent": target.value, "reason": reason},
                is_final=final,
            )

    async def _run_turn(self, *, last_word: bool = True) -> TurnEnd:
        """Route if needed, then call the LLM and run its tool calls until it answers or a stop applies.

        `last_word` is False inside a plan: the subtask's answer is then not a wait point, the plan goes on.
        """
        budget = _Budget(self._config.tool_call_budget)
        while True:
            if self._agent is AgentType.ORCHESTRATOR:
                await self._route(self._history.last_user_text())
            agent = AGENTS[self._agent]
            reply = await self._complete(agent, last_word=last_word)
            if reply is None:
                return TurnEnd.FAILED
            calls = unique_call_ids(reply.tool_calls, self._history, salt=self._new_id()[:8])
            # The assistant message is in the history before any tool_call leaves the runtime (I7).
            self._answer_started_at = workflow.now()
            self._history.add_assistant(
                reply.content, calls, agent=agent.type, message_id=self._new_id(), at=workflow.now()
            )
            if not calls:
                self._emit(ChunkType.ASSISTANT_MESSAGE, content=reply.content, token=reply.content, is_final=last_word)
                return TurnEnd.ANSWERED
            if reply.content:
                self._emit(ChunkType.ASSISTANT_MESSAGE, content=reply.content, token=reply.content)
            round_ = await self._run_tool_calls(agent, calls, budget)
            if round_.plan_end is not None:
                return round_.plan_end
            end = TurnEnd.QUESTION if round_.question else TurnEnd.ANSWERED
            final_text: Content = round_.final_text
            if budget.exhausted:
                self._counters.budget_stops += 1
                end, final_text = TurnEnd.BUDGET, tool_messages.budget_stop_message(budget.limit)
            if final_text is not None:
                final_text = tool_messages.unmistakable(final_text)
                self._history.add_assistant(
                    final_text, [], agent=agent.type, message_id=self._new_id(), at=workflow.now()
                )
                # A follow-up question always waits for the user, inside a plan too.
                final = last_word or end is TurnEnd.QUESTION
                self._emit(ChunkType.ASSISTANT_MESSAGE, content=final_text, token=final_text, is_final=final)
                return end

    async def _run_tool_calls(self, agent: Agent, calls: list[ToolCall], budget: _Budget) -> _ToolRound:
        """Close every call of one assistant message, in order, and say how the turn goes on."""
        round_ = _ToolRound()
        for index, call in enumerate(calls):
            if index >= CALLS_PER_ANSWER_LIMIT:
                self._close_call(call, tool_messages.too_many_calls(len(calls), CALLS_PER_ANSWER_LIMIT), "refused")
                continue
            if not budget.take():
                self._close_call(call, tool_messages.over_budget(budget.limit), outcome="over_budget")
                continue
            refusal = check_tool_call(agent, call)
            if refusal is None and call.name == "create_plan" and round_.plan_proposed:
                refusal = "one plan per answer: wait for the decision on the first one"
            if refusal is not None:
                self._close_call(call, tool_messages.refused(refusal), outcome="refused", emit=True)
            elif call.name == "create_plan":
                round_.plan_proposed = True
                round_.plan_end = await self._propose_plan(agent, call)
            elif CATALOGUE[call.name].executor is Executor.RUNTIME:
                text = self._run_runtime_tool(call)
                if text is not None:
                    round_.final_text = text
                    round_.question = call.name == "ask_followup_question"
            else:
                await self._run_ide_tool(agent, call)
        return round_

    def _run_runtime_tool(self, call: ToolCall) -> Content:
        """Tools the workflow executes itself (arguments already checked against the tool's schema). Returns the
        turn's final text for the completion tools."""
        args = call.arguments
        match call.name:
            case "switch_mode":
                reason = text_or_preview(_argument_text(args.get("reason")))[:500]
                self._close_call(call, self._switch_mode(str(args["mode"]), reason or None), outcome="completed")
            case "echo":
                self._close_call(call, _argument_text(args["text"]), outcome="completed", emit=True)
            case "calculator":
                try:
                    expression = args["expr"]
                    if not isinstance(expression, str):
                        raise CalculatorError("the expression is too long")
                    content, outcome = str(calculate(expression)), "completed"
                except CalculatorError as err:
                    content, outcome = tool_messages.refused(str(err)), "failed"
                self._close_call(call, content, outcome=outcome, emit=True)
            case "attempt_completion":
                self._close_call(call, "The result was shown to the user.", outcome="completed")
                return _argument_text(args["result"])
            case "ask_followup_question":
                self._close_call(call, "The question was shown to the user.", outcome="completed")
                suggestions = [text_or_preview(_argument_text(s))[:500] for s in args.get("suggestions") or []]
                return tool_messages.followup_text(text_or_preview(_argument_text(args["question"])), suggestions)
        return None

    def _switch_mode(self, mode: str, reason: Any) -> str:
        """The switch_mode tool: its result always answers its own call id (bugs B3, B13)."""
        try:
            target = AgentType(mode)
        except ValueError:
            return tool_messages.refused(f"unknown agent '{mode}'")
        if target not in self._agents:
            return tool_messages.refused(f"agent '{mode}' is not available in this session")
        if target is self._agent:
            return f"Already in {target.value} mode; continuing."
        if self._switch_count >= self._config.max_agent_switches:
            return tool_messages.refused(f"the session reached its limit of {self._config.max_agent_switches} switches")
        self._switch_to(target, str(reason or f"Switched by the {self._agent.value} agent"), source="switch_mode")
        return f"Switched to {target.value} agent"

    async def _run_ide_tool(self, agent: Agent, call: ToolCall) -> None:
        """A tool the IDE executes: wait for approval if the policy says so, then for the IDE's result."""
        requirement = evaluate(self._policy, call.name, call.arguments)
        arguments = call.arguments
        if requirement.requires_approval:
            decided = await self._await_approval(agent, call, requirement.reason, requirement.timeout_seconds)
            if decided is None:
                return
            arguments = decided
        elif call.id not in self._ledger.results:
            await self._emit_tool_call(call.id, call.name, arguments, requires_approval=False)
        await self._await_result(agent, call.model_copy(update={"arguments": arguments}))

    async def _await_approval(
        self, agent: Agent, call: ToolCall, reason: str, timeout_seconds: float | None
    ) -> dict[str, Any] | None:
        """Park until a decision, an implicit approval (the IDE's result) or expiry. Returns the args to execute."""
        now = workflow.now()
        approval = PendingApproval(
            request_id=call.id,
            session_id=self._session_id,
            call_id=call.id,
            tool_name=call.name,
            subject=call.name,
            arguments=call.arguments,
            reason=reason,
            agent=agent.type,
            created_at=now,
            expires_at=now + timedelta(seconds=timeout_seconds) if timeout_seconds else None,
        )
        self._ledger.approvals[call.id] = approval
        self._projection.approval(approval)
        self._outstanding[call.id] = OutstandingCall(
            call_id=call.id,
            tool_name=call.name,
            arguments=call.arguments,
            agent=agent.type,
            status=CallStatus.AWAITING_APPROVAL,
            since=now,
        )
        await self._emit_tool_call(call.id, call.name, call.arguments, requires_approval=True, reason=reason)
        self._status = SessionStatus.AWAITING_APPROVAL
        arrived = await self._wait(
            lambda: call.id in self._ledger.decisions or call.id in self._ledger.results, timeout_seconds
        )
        decision = self._ledger.decisions.pop(call.id, None)
        if not arrived:
            self._settle(approval, ApprovalStatus.EXPIRED, decided_by="expiry")
            self._close_call(call, tool_messages.approval_expired(call.name, timeout_seconds or 0), "expired", True)
            return None
        if decision is None:
            # A legacy IDE executes on click and sends only the result: that is an implicit approval.
            self._settle(approval, ApprovalStatus.APPROVED, decided_by="tool_result", decision=Decision.APPROVE)
            return call.arguments
        if decision.decision is Decision.REJECT:
            self._settle(approval, ApprovalStatus.REJECTED, decision=decision.decision, feedback=decision.feedback)
            self._close_call(call, tool_messages.rejected(call.name, decision.feedback), "rejected", emit=True)
            return None
        arguments = call.arguments
        if decision.decision is Decision.EDIT and decision.modified_arguments is not None:
            arguments = decision.modified_arguments
            self._history.amend_arguments(call.id, arguments)
        self._settle(
            approval,
            ApprovalStatus.APPROVED,
            decision=decision.decision,
            feedback=decision.feedback,
            edited=arguments if decision.decision is Decision.EDIT else None,
        )
        if call.id not in self._ledger.results:
            await self._emit_tool_call(call.id, call.name, arguments, requires_approval=False)
        return arguments

    async def _await_result(self, agent: Agent, call: ToolCall) -> None:
        """Park until the IDE answers; the lease closes the call with an error if it never does."""
        lease = self._config.tool_lease_seconds
        self._outstanding[call.id] = OutstandingCall(
            call_id=call.id,
            tool_name=call.name,
            arguments=call.arguments,
            agent=agent.type,
            status=CallStatus.AWAITING_RESULT,
            since=workflow.now(),
            lease_expires_at=workflow.now() + timedelta(seconds=lease),
        )
        self._status = SessionStatus.AWAITING_TOOL_RESULT
        if not await self._wait(lambda: call.id in self._ledger.results, lease):
            self._close_call(call, tool_messages.lease_expired(call.name, lease), outcome="lease_expired", emit=True)
            return
        result = self._ledger.results.pop(call.id)
        # An execution error after approval is a failed tool, not a rejection (bug L3).
        if result.content is not None:
            content: Content = result.content
            failed = result.failed
        else:
            content, failed = tool_messages.from_ide_result(result.result, result.error), bool(result.error)
        self._close_call(call, content, outcome="failed" if failed else "completed")

    def _settle(
        self,
        approval: PendingApproval,
        status: ApprovalStatus,
        *,
        decided_by: str = "hitl_decision",
        decision: Decision | PlanDecisionKind | None = None,
        feedback: str | None = None,
        edited: dict[str, Any] | None = None,
    ) -> None:
        settled = approval.model_copy(
            update={
                "status": status,
                "decided_at": workflow.now(),
                "decided_by": decided_by,
                "decision": decision,
                "feedback": feedback,
                "edited_arguments": edited,
            }
        )
        self._ledger.approvals[approval.call_id] = settled
        self._projection.approval(settled)
        self._metrics.approval_settled(settled)
        key = decision.value if decision else status.value
        self._counters.approvals[key] = self._counters.approvals.get(key, 0) + 1

    def _close_call(self, call: ToolCall, content: Content, outcome: str, emit: bool = False) -> None:
        """Write the one tool message of a call; every path that ends a call ends here (I1, I2)."""
        self._history.add_tool_result(call.id, content, message_id=self._new_id(), at=workflow.now())
        self._projection.tool_call(
            call, agent=self._agent, requested_at=self._answer_started_at, outcome=outcome, result=content
        )
        self._outstanding.pop(call.id, None)
        self._ledger.results.pop(call.id, None)
        self._status = SessionStatus.RUNNING
        self._counters.tool_calls[outcome] = self._counters.tool_calls.get(outcome, 0) + 1
        self._metrics.tool_call(call.name, outcome)
        if emit:
            self._emit(
                ChunkType.TOOL_RESULT,
                content=content,
                call_id=call.id,
                tool_name=call.name,
                error=content if isinstance(content, str) and content.startswith("Error:") else None,
                metadata={"outcome": outcome},
            )

    # --- plans: one approval, then subtasks in dependency order, each by its agent ---

    async def _propose_plan(self, agent: Agent, call: ToolCall) -> TurnEnd | None:
        """The architect's create_plan: validate, ask for the one plan approval, and act on the decision.

        Returns how the turn ends (plan approved or rejected), or None when the LLM should go on (invalid plan,
        modification requested, approval expired) - it then learns why from the call's tool message.
        """
        now = workflow.now()
        try:
            plan = parse_plan(
                call.arguments, plan_id=self._new_id(), available=self._agents, call_id=call.id, created_at=now
            )
        except PlanError as err:
            self._close_call(call, tool_messages.refused(str(err)), outcome="refused", emit=True)
            return None
        self._plans.append(plan)
        timeout_seconds = evaluate(self._policy, call.name, call.arguments).timeout_seconds
        approval = PendingApproval(
            request_id=plan.approval_request_id,
            request_type="plan",
            session_id=self._session_id,
            call_id=call.id,
            tool_name=call.name,
            subject=plan.title[:100],
            arguments=summary(plan) | {"plan_id": plan.plan_id},
            reason="Every plan needs the user's approval before it runs",
            agent=agent.type,
            created_at=now,
            expires_at=now + timedelta(seconds=timeout_seconds) if timeout_seconds else None,
        )
        self._ledger.approvals[call.id] = approval
        self._projection.approval(approval)
        self._projection.plan(plan)
        self._outstanding[call.id] = OutstandingCall(
            call_id=call.id,
            tool_name=call.name,
            arguments=call.arguments,
            agent=agent.type,
            status=CallStatus.AWAITING_APPROVAL,
            since=now,
        )
        self._status = SessionStatus.AWAITING_APPROVAL
        await self._persist_before_wait_point()
        self._emit(
            ChunkType.PLAN_APPROVAL_REQUIRED,
            content=f"Plan '{plan.title}' ({len(plan.subtasks)} subtasks) needs your approval",
            call_id=call.id,
            tool_name=call.name,
            approval_request_id=plan.approval_request_id,
            plan_id=plan.plan_id,
            plan_summary=summary(plan),
            requires_approval=True,
            is_final=True,
        )
        request_id = plan.approval_request_id
        arrived = await self._wait(lambda: request_id in self._ledger.plan_decisions, timeout_seconds)
        decision = self._ledger.plan_decisions.pop(request_id, None)
        if not arrived or decision is None:
            self._settle(approval, ApprovalStatus.EXPIRED, decided_by="expiry")
            self._update_plan(plan, PlanStatus.EXPIRED)
            self._close_call(call, tool_messages.approval_expired(call.name, timeout_seconds or 0), "expired", True)
            return None
        status = ApprovalStatus.APPROVED if decision.decision is PlanDecisionKind.APPROVE else ApprovalStatus.REJECTED
        self._settle(
            approval, status, decided_by="plan_decision", decision=decision.decision, feedback=decision.feedback
        )
        plan.feedback = decision.feedback
        match decision.decision:
            case PlanDecisionKind.APPROVE:
                self._update_plan(plan, PlanStatus.IN_PROGRESS)
                self._close_call(call, tool_messages.plan_approved(len(plan.subtasks)), outcome="completed")
                return TurnEnd.PLAN_APPROVED
            case PlanDecisionKind.REJECT:
                self._update_plan(plan, PlanStatus.REJECTED)
                self._close_call(call, tool_messages.rejected(call.name, decision.feedback), outcome="rejected")
                self._emit(
                    ChunkType.PLAN_REJECTED,
                    content=f"Plan '{plan.title}' was rejected",
                    plan_id=plan.plan_id,
                    approval_request_id=request_id,
                    metadata={"feedback": decision.feedback} if decision.feedback else None,
                    is_final=True,
                )
                return TurnEnd.PLAN_REJECTED
            case PlanDecisionKind.MODIFY:
                self._update_plan(plan, PlanStatus.MODIFICATION_REQUESTED)
                self._close_call(call, tool_messages.plan_changes_requested(decision.feedback), outcome="rejected")
                self._emit(
                    ChunkType.PLAN_MODIFICATION_REQUESTED,
                    content=f"Revising plan '{plan.title}'",
                    plan_id=plan.plan_id,
                    approval_request_id=request_id,
                    metadata={"feedback": decision.feedback} if decision.feedback else None,
                )
                return None

    async def _execute_plan(self, plan: Plan) -> None:
        """Run the approved plan's subtasks in dependency order. A tool approval or a follow-up question inside a
        subtask parks that subtask and resumes it exactly there: nothing re-routes or re-plans (bug B7)."""
        self._emit(
            ChunkType.STATUS,
            content=f"Executing plan '{plan.title}': {len(plan.subtasks)} subtasks",
            plan_id=plan.plan_id,
        )
        while (subtask := next_subtask(plan)) is not None:
            subtask.status = SubtaskStatus.IN_PROGRESS
            self._projection.plan(plan)
            self._emit(
                ChunkType.STATUS,
                content=f"Subtask {subtask.index + 1}/{len(plan.subtasks)}: {subtask.title} ({subtask.agent.value})",
                plan_id=plan.plan_id,
                metadata={"subtask_index": subtask.index, "status": subtask.status.value},
            )
            self._switch_to(subtask.agent, f"Plan subtask {subtask.index + 1}: {subtask.title}", source="plan")
            self._history.add_user(
                subtask_instruction(plan, subtask), message_id=self._new_id(), at=workflow.now(), name="plan"
            )
            end = await self._run_turn(last_word=False)
            while end is TurnEnd.QUESTION:
                answer = await self._next_user_message()
                self._history.add_user(answer.content, message_id=self._new_id(), at=workflow.now())
                end = await self._run_turn(last_word=False)
            if end is TurnEnd.ANSWERED:
                subtask.status, subtask.result = SubtaskStatus.DONE, preview_of(self._history.messages[-1].content)
            else:
                subtask.status, subtask.error = SubtaskStatus.FAILED, _SUBTASK_FAILURES[end]
            self._projection.plan(plan)
            self._emit(
                ChunkType.SUBTASK_COMPLETED,
                content=f"Subtask {subtask.index + 1} {subtask.status.value}: {subtask.title}",
                plan_id=plan.plan_id,
                error=subtask.error,
                metadata={"subtask_index": subtask.index, "status": subtask.status.value, "result": subtask.result},
            )
        block_dependants(plan)
        done = [s for s in plan.subtasks if s.status is SubtaskStatus.DONE]
        failed = len(done) < len(plan.subtasks)
        self._update_plan(plan, PlanStatus.FAILED if failed else PlanStatus.COMPLETED)
        lines = [
            f"- {s.index + 1}. {s.title}: {s.status.value}" + (f" ({s.error})" if s.error else "")
            for s in plan.subtasks
        ]
        verdict = f"failed: {len(done)} of {len(plan.subtasks)} subtasks done" if failed else "completed"
        self._emit(
            ChunkType.EXECUTION_COMPLETED,
            content=f"Plan '{plan.title}' {verdict}\n" + "\n".join(lines),
            plan_id=plan.plan_id,
            plan_summary=summary(plan),
            error=verdict if failed else None,
            is_final=True,
        )

    async def _next_user_message(self) -> UserMessage:
        """Inside a plan, the answer to a follow-up question: the next user message (explicit switches apply)."""
        while True:
            await workflow.wait_condition(lambda: bool(self._inbox))
            item = self._inbox.popleft()
            if isinstance(item, SwitchAgent):
                self._on_switch_request(item)
                continue
            if item.agent_type is not None:
                self._switch_explicitly(item.agent_type, "Requested with the user message", final=False)
            if not is_blank(item.content):
                return item

    def _update_plan(self, plan: Plan, status: PlanStatus) -> None:
        plan.status = status
        self._projection.plan(plan)

    # --- routing and agents ---

    async def _route(self, text: str) -> None:
        """The orchestrator's classification; runs once per user message, never after a decision (bug B7)."""
        route = single_agent_route(self._agents) or await self._classify(text)
        self._switch_to(
            route.agent,
            route.reason or f"Routed by {route.method}",
            source="single_agent" if route.method == "single_agent" else "classification",
            confidence=route.confidence,
            method=route.method,
        )

    async def _classify(self, text: str) -> Route:
        try:
            return parse_classification(await self._llm.classify(text, self._agents), self._agents)
        except (ActivityError, ClassificationError) as err:
            self._counters.classification_fallbacks += 1
            self._metrics.classification_fallback()
            workflow.logger.warning("Classification failed, using keywords: %s", error_text(err))
            return route_by_keywords(text, self._agents)

    def _switch_to(
        self,
        target: AgentType,
        reason: str,
        *,
        source: str,
        confidence: str | None = None,
        method: str | None = None,
        final: bool = False,
    ) -> bool:
        if target is self._agent:
            return False
        record = AgentSwitchRecord.model_validate(
            {
                "from_agent": self._agent,
                "to_agent": target,
                "reason": reason,
                "switched_at": workflow.now(),
                "confidence": confidence,
                "source": source,
            }
        )
        metadata: dict[str, Any] = {"from_agent": self._agent.value, "to_agent": target.value, "reason": reason}
        self._metrics.switch(self._agent, target, source)
        self._switches.append(record)
        self._switch_count += 1
        self._projection.switch(self._switch_count - 1, record)
        self._agent = target
        if confidence:
            metadata["confidence"] = confidence
        if method:
            metadata["classification_method"] = method
        self._emit(
            ChunkType.AGENT_SWITCHED, content=f"Switched to {target.value} agent", metadata=metadata, is_final=final
        )
        return True

    # --- the LLM ---

    async def _complete(self, agent: Agent, *, last_word: bool = True) -> LlmReply | None:
        """One agent step; a failure becomes an `error` event and leaves the history untouched (I3, B2).

        A provider that refused the context as too long teaches the session a smaller window, so the next turns
        start from it instead of failing the same way.
        """
        try:
            reply = await self._llm.complete(agent, self._history.for_llm(), self._transcript, self._context_tokens)
        except ActivityError as err:
            self._context_tokens = learned_window(err) or self._context_tokens
            self._emit(ChunkType.ERROR, content=error_text(err), error=error_text(err), is_final=last_word)
            return None
        if reply.context_tokens is not None:
            self._context_tokens = min(self._context_tokens, reply.context_tokens)
        return reply

    # --- plumbing ---

    async def _wait(self, ready: Callable[[], bool], timeout_seconds: float | None) -> bool:
        """A durable wait: True when `ready` holds, False when the timer ran out first."""
        try:
            await workflow.wait_condition(ready, timeout=timeout_seconds)
        except TimeoutError:
            return ready()
        return True

    async def _emit_tool_call(
        self, call_id: str, name: str, arguments: dict[str, Any], *, requires_approval: bool, reason: str = ""
    ) -> None:
        """A `tool_call` event is a wait point: the runtime now waits for the human or the IDE.

        The call is written to the projection first (I7, bug B4), unless the database is down: the workflow's own
        history already holds it durably, and the projection catches up later.
        """
        self._status = SessionStatus.AWAITING_APPROVAL if requires_approval else SessionStatus.AWAITING_TOOL_RESULT
        self._projection.tool_call(
            ToolCall(id=call_id, name=name, arguments=arguments),
            agent=self._agent,
            requested_at=self._answer_started_at,
        )
        await self._persist_before_wait_point()
        self._emit(
            ChunkType.TOOL_CALL,
            call_id=call_id,
            tool_name=name,
            arguments=arguments,
            requires_approval=requires_approval,
            approval_request_id=call_id if requires_approval else None,
            metadata={"reason": reason} if reason else None,
            is_final=True,
        )

    def _emit(self, type: ChunkType, **fields: Any) -> None:
        chunk = StreamChunk(type=type, session_id=self._session_id, **fields)
        self._events.publish(chunk)
        if chunk.is_final:
            self._publish_observability()
        self._projection.event(chunk)

    def _new_id(self) -> str:
        return str(workflow.uuid4())

    async def _persist_before_wait_point(self) -> None:
        """Drain the projection before a wait point is announced, unless the database is known to be down."""
        self._project_session()
        await self._projection.drained()

    # --- what operators see in the Web UI ---

    def _publish_observability(self) -> None:
        """Refresh the Web UI's current details and, when registered, the search attributes (only on change)."""
        pending = self.pending_approvals()
        workflow.set_current_details(
            current_details(self._status, self._agent, pending, self._open_calls(), len(self._inbox))
        )
        if not self._config.search_attributes:
            return
        updates = search_attribute_updates(self._status, self._agent, pending)
        if fingerprint(updates) != self._published_attributes:
            workflow.upsert_search_attributes(updates)
            self._published_attributes = fingerprint(updates)

    # --- the PostgreSQL projection ---

    def _title(self) -> str | None:
        """The first user message (its first 500 characters)."""
        if self._title_text is not None:
            return self._title_text
        # Not set yet, or a session carried over before the title was: the first user message it still holds.
        first = next((m.content for m in self._history.messages if m.role == "user" and not m.name), None)
        return preview_of(first) or None

    def _project_session(self) -> None:
        self._projection.add(
            SessionRecord(
                session_id=self._session_id,
                title=self._title(),
                current_agent=self._agent,
                status=self._status,
                message_count=len(self._history),
                created_at=self._created_at or workflow.now(),
                last_activity=workflow.now(),
                counters=self._counters,
            )
        )

    def _should_continue_as_new(self) -> bool:
        """Only between turns, so no wait is ever cut in half; queued inputs travel in the carried state.

        Besides Temporal's suggestion (history size) and the configured turn limit, a run ends once its messages
        add `HISTORY_SIZE_LIMIT` to workflow state: every LLM call sends them, so this keeps the cost of a turn flat.
        """
        if self._history.open_calls:
            return False
        limit = self._config.continue_as_new_after_turns
        if workflow.info().is_continue_as_new_suggested() or (limit is not None and self._turns >= limit):
            return True
        # Not before this run's first turn: a carried history that could not be archived must not loop.
        return self._archives_transcript and self._turns > 0 and self._history.size > HISTORY_SIZE_LIMIT

    async def _continue_as_new(self) -> None:
        """Hand over to a new run with bounded, structured state (never a summary).

        Nothing may be in flight when the run hands over (an activity completing during the continue-as-new task
        fails it with UNHANDLED_COMMAND): the projection's writer stops first, the transcript is archived, and the
        carried state is built only after every handler has finished, so an input accepted meanwhile travels too.
        """
        await self._projection.quiesce()
        carried_history = self._history.messages, self._history.first_seq
        if self._archives_transcript:
            carried_history = await self._archive_older_turns()
        self._trim_event_log()
        await self._stream.continue_as_new(
            lambda stream_state: [
                ConversationInput(
                    session_id=self._session_id,
                    config=self._config,
                    carried=self._carried_state(*carried_history),
                    stream_state=stream_state,
                )
            ],
            publisher_ttl=max(STREAM_PUBLISHER_TTL, 2 * timedelta(seconds=self._config.llm_timeout_seconds)),
        )

    async def _archive_older_turns(self) -> tuple[list[ChatMessage], int]:
        """Store all but the newest turns in the content store; returns what the next run carries, and its seq.

        If the store cannot be reached, everything is carried (the next run tries again): a session never stops
        because its archive is down, it only carries more for a while.
        """
        archived, kept = self._history.split_for_archive(HISTORY_SIZE_KEPT)
        if not archived:
            return kept, self._history.first_seq
        try:
            self._transcript = await workflow.execute_activity(
                ARCHIVE_TRANSCRIPT_ACTIVITY,
                ArchiveTranscriptInput(
                    session_id=self._session_id,
                    first_seq=self._history.first_seq,
                    messages=archived,
                    previous=self._transcript,
                ),
                result_type=TranscriptArchive,
                start_to_close_timeout=ARCHIVE_TIMEOUT,
                retry_policy=ARCHIVE_RETRY,
                summary=f"archive {len(archived)} messages",
            )
        except ActivityError as err:
            workflow.logger.warning("Transcript not archived, carrying it whole: %s", err.cause or err)
            return self._history.messages, self._history.first_seq
        return kept, self._history.first_seq + len(archived)

    def _trim_event_log(self) -> None:
        """Keep only the newest events (by count and by size) for clients resuming from an offset."""
        # The stream exposes neither its log nor its offset to workflow code; its query handler returns the offset.
        offset = self._stream._on_offset()
        kept, size = 0, 0
        for item in reversed(self._stream._log):
            size += item.data.ByteSize()
            if kept >= EVENTS_KEPT_ON_CONTINUE or size > EVENTS_SIZE_KEPT_ON_CONTINUE:
                break
            kept += 1
        self._stream.truncate(offset - kept)

    def _carried_state(self, history: list[ChatMessage], first_seq: int) -> CarriedState:
        """The state the next run starts from; each part bounded (see the constants at the top of this module)."""
        approvals = list(self._ledger.approvals.values())
        settled = [a for a in approvals if a.status is not ApprovalStatus.PENDING][-SETTLED_APPROVALS_KEPT:]
        pending = [a for a in approvals if a.status is ApprovalStatus.PENDING]
        finished = (PlanStatus.COMPLETED, PlanStatus.FAILED, PlanStatus.REJECTED, PlanStatus.CANCELLED)
        old = {id(p) for p in [p for p in self._plans if p.status in finished][:-PLANS_KEPT]}
        plans = [p for p in self._plans if id(p) not in old]
        return CarriedState(
            history=history,
            transcript=self._transcript,
            first_seq=first_seq,
            answered_call_ids=self._history.answered_ids,
            title=self._title(),
            current_agent=self._agent,
            approvals=settled + pending,
            switches=self._switches[-SWITCHES_KEPT:],
            switch_count=self._switch_count,
            seen_message_ids=self._seen_message_ids.newest(),
            queued_inputs=list(self._inbox),
            plans=plans,
            counters=self._counters,
            created_at=self._created_at,
            runs=self._run + 1,
            context_tokens=self._context_tokens if self._context_tokens < self._config.llm_context_tokens else None,
            unprojected=self._projection.pending,
        )


def _argument_text(value: Any) -> Content:
    """A string argument as the runtime uses it: the text, or its reference when it was stored by reference."""
    ref = marker_ref(value)
    return ref if ref is not None else str(value)


class TurnEnd(StrEnum):
    """How an agent turn ended; a plan uses it to mark its subtask."""

    ANSWERED = "answered"
    QUESTION = "question"
    FAILED = "failed"
    BUDGET = "budget"
    PLAN_APPROVED = "plan_approved"
    PLAN_REJECTED = "plan_rejected"


_SUBTASK_FAILURES = {
    TurnEnd.FAILED: "the LLM call failed",
    TurnEnd.BUDGET: "stopped at the tool-call budget",
    TurnEnd.PLAN_APPROVED: "a subtask cannot start a plan",
    TurnEnd.PLAN_REJECTED: "a subtask cannot start a plan",
}


@dataclass
class _ToolRound:
    """What the tool calls of one assistant message decided about the turn."""

    final_text: Content = None
    question: bool = False
    plan_proposed: bool = False
    plan_end: TurnEnd | None = None


class _Budget:
    """The per-turn tool-call budget that stops runaway tool loops (bug B15)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.exhausted = False

    def take(self) -> bool:
        if self.used >= self.limit:
            self.exhausted = True
            return False
        self.used += 1
        return True
