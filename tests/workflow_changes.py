"""Workflow code changed in ways that break running sessions, for proving that `agent-runtime replay` catches them."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

from workflows.conversation import ConversationWorkflow
from workflows.model import CONVERSATION_WORKFLOW, ConversationInput


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
