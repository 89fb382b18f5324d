"""The agents (spec §1): a system prompt, the tools an agent may call, and the paths it may write.

`check_tool_call` is the one place a call is checked against its agent; a refused call gets an error tool result
for its own call id and never reaches the approval step (bug L1).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict

from workflows.arguments import argument_problems, describe_problems
from workflows.content import compact_refs
from workflows.model import (
    AgentType,
    ToolCall,
    ToolSpec,
)
from workflows.tools import CATALOGUE


class Agent(BaseModel):
    model_config = ConfigDict(frozen=True)

    type: AgentType
    name: str
    description: str
    prompt: str
    allowed_tools: tuple[str, ...]
    write_path_patterns: tuple[str, ...] = ()
    write_path_hint: str = ""

    @property
    def has_file_restrictions(self) -> bool:
        return bool(self.write_path_patterns) or "write_file" not in self.allowed_tools

    def tool_specs(self) -> list[ToolSpec]:
        return [CATALOGUE[name].spec for name in self.allowed_tools]


_FINISH = (
    "When the task is done, call `attempt_completion` with the final result. If you need information only the user "
    "has, call `ask_followup_question` with 2-4 suggested answers."
)

AGENTS: dict[AgentType, Agent] = {
    a.type: a
    for a in [
        Agent(
            type=AgentType.ORCHESTRATOR,
            name="Orchestrator",
            description="Classifies each request and routes it to the agent that fits; never answers itself.",
            prompt="You route user requests to the right specialist agent. You never answer requests yourself.",
            allowed_tools=(),
        ),
        Agent(
            type=AgentType.CODER,
            name="Coder",
            description="Creates, modifies and refactors code and runs commands.",
            prompt=(
                "You are the coder agent of an IDE assistant. You write and change code and run commands in the "
                "user's workspace. Read before you write: use `read_file`, `list_files` and `search_in_code`. "
                "Change files with `write_file`, create folders with `create_directory` and run commands with "
                "`execute_command`; the user approves each of these before it runs. " + _FINISH
            ),
            allowed_tools=(
                "read_file",
                "write_file",
                "list_files",
                "search_in_code",
                "create_directory",
                "execute_command",
                "attempt_completion",
                "ask_followup_question",
            ),
        ),
        Agent(
            type=AgentType.ARCHITECT,
            name="Architect",
            description="Designs systems and writes specifications, plans and documentation (markdown only).",
            prompt=(
                "You are the architect agent of an IDE assistant. You design, plan and document. Explore the code "
                "with `read_file`, `list_files` and `search_in_code`; you may write markdown (.md) files only, "
                "with `write_file`. For work of several steps, propose a plan with `create_plan`: subtasks for the "
                "coder, debug or ask agents, with dependencies; the user approves it and the subtasks then run in "
                "order. For a single change, hand over with `switch_mode`. " + _FINISH
            ),
            allowed_tools=(
                "read_file",
                "write_file",
                "list_files",
                "search_in_code",
                "attempt_completion",
                "ask_followup_question",
                "switch_mode",
                "create_plan",
            ),
            write_path_patterns=(r".*\.md",),
            write_path_hint="Architect agent can only create/edit markdown (.md) files",
        ),
        Agent(
            type=AgentType.DEBUG,
            name="Debug",
            description="Investigates errors, runs diagnostics and proposes fixes without editing files.",
            prompt=(
                "You are the debug agent of an IDE assistant. You investigate errors: read code with `read_file`, "
                "`list_files` and `search_in_code`, run diagnostics with `execute_command` (the user approves "
                "each command). You do not edit files; to apply a fix, hand over to the coder with `switch_mode`. "
                + _FINISH
            ),
            allowed_tools=(
                "read_file",
                "list_files",
                "search_in_code",
                "execute_command",
                "attempt_completion",
                "ask_followup_question",
                "switch_mode",
            ),
        ),
        Agent(
            type=AgentType.ASK,
            name="Ask",
            description="Answers questions and explains code; read-only.",
            prompt=(
                "You are the ask agent of an IDE assistant. You answer questions and explain code. You are "
                "read-only: use `read_file`, `list_files` and `search_in_code`. If the user wants code changed or "
                "commands run, hand over with `switch_mode`. Answer in plain text, or finish with "
                "`attempt_completion`."
            ),
            allowed_tools=("read_file", "search_in_code", "list_files", "attempt_completion", "switch_mode"),
        ),
        Agent(
            type=AgentType.UNIVERSAL,
            name="Universal",
            description="Single-agent mode: does everything with every tool.",
            prompt=(
                "You are the IDE assistant. You answer questions, write and change code and run commands. Use "
                "`read_file`, `list_files` and `search_in_code` to explore, `write_file`, `create_directory` and "
                "`execute_command` to act (the user approves each of these), `echo` and `calculator` for small "
                "utilities. " + _FINISH
            ),
            allowed_tools=tuple(name for name in CATALOGUE if name != "switch_mode"),
        ),
    ]
}

SINGLE_AGENT_SET = frozenset({AgentType.ORCHESTRATOR, AgentType.UNIVERSAL})


def available_agents(multi_agent_mode: bool) -> frozenset[AgentType]:
    """Agents registered for a session: all of them, or orchestrator + universal in single-agent mode."""
    return frozenset(AGENTS) if multi_agent_mode else SINGLE_AGENT_SET


_FRIENDLY_REFUSALS = {
    (AgentType.ASK, "write_file"): "The ask agent is read-only and cannot write files; switch to the coder.",
    (AgentType.ASK, "execute_command"): "The ask agent cannot run commands; switch to the coder or debug agent.",
    (AgentType.DEBUG, "write_file"): "The debug agent cannot edit files; switch to the coder to apply the fix.",
}


def check_tool_call(agent: Agent, call: ToolCall) -> str | None:
    """Why this agent may not make this call, or None if it may.

    Whatever the model wrote is untrusted: an unknown tool, unreadable arguments or arguments that do not match the
    tool's schema (wrong types, a missing field, a value out of range) are refused here with a reason the model can
    act on, before any runtime code reads the arguments.
    """
    if call.name not in CATALOGUE:
        return f"Unknown tool '{call.name[:100]}'"
    if call.name not in agent.allowed_tools:
        return _FRIENDLY_REFUSALS.get(
            (agent.type, call.name), f"Tool '{call.name}' is not allowed for {agent.name} agent"
        )
    if call.invalid_arguments is not None:
        return f"Invalid arguments for {call.name}: {call.invalid_arguments}. Call the tool again with a JSON object."
    # A value stored by reference stands for a string (what the schema checks is its type, not its content).
    problems = argument_problems(CATALOGUE[call.name].spec.parameters, compact_refs(call.arguments))
    if problems:
        return describe_problems(call.name, problems)
    if call.name == "write_file" and agent.write_path_patterns:
        path = str(call.arguments.get("path", ""))
        if not any(re.fullmatch(p, path) for p in agent.write_path_patterns):
            return f"{agent.write_path_hint}; '{path}' is not allowed"
    return None


def tool_names_in_prompt(prompt: str) -> set[str]:
    """Tool names a prompt tells the model to call (written in backticks)."""
    return set(re.findall(r"`([a-z_]+)`", prompt))


def describe(agent: Agent) -> dict[str, Any]:
    """The original's `/agents` entry for one agent."""
    return {
        "type": agent.type.value,
        "name": agent.name,
        "description": agent.description,
        "allowed_tools": list(agent.allowed_tools),
        "has_file_restrictions": agent.has_file_restrictions,
    }
