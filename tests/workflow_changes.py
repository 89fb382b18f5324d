"""Workflow code changed: in ways that break running sessions (for proving that `agent-runtime replay` catches them),
and with planted bugs (for proving that a bug costs a turn, not a session). Kept apart from the tests because the
workflow sandbox imports the module that defines a workflow."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

# Passed through like the product's own workflow module does: a second, sandboxed copy of the contract types would
# make the workflow's values fail validation in the real module's models.
with workflow.unsafe.imports_passed_through():
    from workflows.content import Content
    from workflows.conversation import ConversationWorkflow
    from workflows.model import CONVERSATION_WORKFLOW, ToolCall
    from workflows.runtime_tools import RuntimeTools
    from workflows.state import ConversationInput


@workflow.defn(name=CONVERSATION_WORKFLOW)
class TimerFirstConversationWorkflow(ConversationWorkflow):
    """Someone added a timer before the loop: every recorded history diverges at its first command."""

    @workflow.init
    def __init__(self, input: ConversationInput) -> None:
        super().__init__(input)

    @workflow.run
    async def run(self, input: ConversationInput) -> None:
        await workflow.sleep(timedelta(seconds=1))
        await super().run(input)


@workflow.defn(name=CONVERSATION_WORKFLOW)
class BugInATurnWorkflow(ConversationWorkflow):
    """The product's workflow with a planted bug inside a turn: the echo tool crashes on "boom"."""

    @workflow.init
    def __init__(self, input: ConversationInput) -> None:
        super().__init__(input)
        self._turn._tools = _BuggyTools(self._session)

    @workflow.run
    async def run(self, input: ConversationInput) -> None:
        await super().run(input)


class _BuggyTools(RuntimeTools):
    def run(self, call: ToolCall) -> Content:
        if call.name == "echo" and call.arguments.get("text") == "boom":
            raise RuntimeError("planted bug in echo")
        return super().run(call)


@workflow.defn(name=CONVERSATION_WORKFLOW)
class BugBetweenTurnsWorkflow(ConversationWorkflow):
    """The product's workflow with a planted bug outside any turn, once a user has said "crash"."""

    @workflow.init
    def __init__(self, input: ConversationInput) -> None:
        super().__init__(input)

    @workflow.run
    async def run(self, input: ConversationInput) -> None:
        await super().run(input)

    def _should_continue_as_new(self) -> bool:
        if any(m.content == "crash" for m in self._session.history.messages):
            raise RuntimeError("planted bug between turns")
        return super()._should_continue_as_new()
