"""The one tool catalogue (spec §2): every tool an agent may be offered, and where it runs.

IDE tools are sent to the IDE as a `tool_call` event and answered by a `tool_result` input. Runtime tools are
executed by the workflow itself, deterministically, right after the assistant message that called them.
Names referenced by agents, prompts or the approval policy must exist here (checked at start, bug B5).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

from workflows.model import (
    AgentType,
    ToolSpec,
)


class Executor(StrEnum):
    IDE = "ide"
    RUNTIME = "runtime"


class Tool(BaseModel):
    model_config = ConfigDict(frozen=True)

    spec: ToolSpec
    executor: Executor

    @property
    def name(self) -> str:
        return self.spec.name


def _tool(name: str, description: str, executor: Executor, properties: dict[str, Any], required: list[str]) -> Tool:
    parameters = {"type": "object", "properties": properties, "required": required}
    return Tool(spec=ToolSpec(name=name, description=description, parameters=parameters), executor=executor)


_STR = {"type": "string"}
_SPECIALIST_MODES = [a.value for a in AgentType if a is not AgentType.UNIVERSAL]

CATALOGUE: dict[str, Tool] = {
    t.name: t
    for t in [
        _tool(
            "read_file",
            "Read a file of the workspace, optionally a range of lines (1-based, inclusive).",
            Executor.IDE,
            {
                "path": _STR,
                "encoding": {"type": "string", "default": "utf-8"},
                "start_line": {"type": "integer", "minimum": 1},
                "end_line": {"type": "integer", "minimum": 1},
            },
            ["path"],
        ),
        _tool(
            "write_file",
            "Create or overwrite a file of the workspace with the given content.",
            Executor.IDE,
            {
                "path": _STR,
                "content": _STR,
                "encoding": {"type": "string", "default": "utf-8"},
                "create_dirs": {"type": "boolean", "default": False},
                "backup": {"type": "boolean", "default": True},
            },
            ["path", "content"],
        ),
        _tool(
            "list_files",
            "List files in a directory of the workspace ('.' is the workspace root).",
            Executor.IDE,
            {
                "path": _STR,
                "recursive": {"type": "boolean", "default": False},
                "include_hidden": {"type": "boolean", "default": False},
                "pattern": {"type": "string", "description": "glob pattern"},
            },
            ["path"],
        ),
        _tool(
            "create_directory",
            "Create a directory in the workspace.",
            Executor.IDE,
            {"path": _STR, "recursive": {"type": "boolean", "default": True}},
            ["path"],
        ),
        _tool(
            "execute_command",
            "Run a shell command in the workspace. Commands run only after the user approves them.",
            Executor.IDE,
            {
                "command": _STR,
                "cwd": _STR,
                "timeout": {"type": "integer", "default": 60, "minimum": 1, "maximum": 300},
                "shell": {"type": "boolean", "default": False},
            },
            ["command"],
        ),
        _tool(
            "search_in_code",
            "Search the workspace's code for a text or a regular expression.",
            Executor.IDE,
            {
                "query": _STR,
                "path": {"type": "string", "default": "."},
                "file_pattern": _STR,
                "case_sensitive": {"type": "boolean", "default": False},
                "regex": {"type": "boolean", "default": False},
                "max_results": {"type": "integer", "default": 100, "minimum": 1, "maximum": 1000},
            },
            ["query"],
        ),
        _tool(
            "switch_mode",
            "Hand the conversation to another agent when the request fits it better.",
            Executor.RUNTIME,
            {"mode": {"type": "string", "enum": _SPECIALIST_MODES}, "reason": _STR},
            ["mode"],
        ),
        _tool("echo", "Return the given text unchanged.", Executor.RUNTIME, {"text": _STR}, ["text"]),
        _tool(
            "calculator",
            "Evaluate an arithmetic expression (numbers, + - * / // % **, parentheses).",
            Executor.RUNTIME,
            {"expr": _STR},
            ["expr"],
        ),
        _tool(
            "attempt_completion",
            "Finish the task: give the user the final result of your work.",
            Executor.RUNTIME,
            {"result": _STR},
            ["result"],
        ),
        _tool(
            "ask_followup_question",
            "Ask the user a question when you need more information, with 2-4 suggested answers.",
            Executor.RUNTIME,
            {
                "question": _STR,
                "suggestions": {"type": "array", "items": _STR, "minItems": 2, "maxItems": 4},
            },
            ["question", "suggestions"],
        ),
        _tool(
            "create_plan",
            "Propose a plan of subtasks for the user to approve; once approved, each subtask is executed by its "
            "agent in dependency order.",
            Executor.RUNTIME,
            {
                "title": _STR,
                "description": _STR,
                "subtasks": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "properties": {
                            "title": _STR,
                            "description": _STR,
                            "agent": {"type": "string", "enum": ["coder", "debug", "ask"]},
                            "estimated_time_minutes": {"type": "integer", "minimum": 1},
                            "dependencies": {
                                "type": "array",
                                "items": {"type": "integer", "minimum": 0},
                                "description": "indices of subtasks that must finish first",
                            },
                        },
                        "required": ["title", "description", "agent", "estimated_time_minutes"],
                    },
                },
            },
            ["title", "description", "subtasks"],
        ),
    ]
}

# Runtime tools whose result waits for a human (the plan approval) instead of being written at once.
APPROVAL_GATED_RUNTIME_TOOLS = frozenset({"create_plan"})
