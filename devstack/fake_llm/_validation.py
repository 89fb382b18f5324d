"""OpenAI's request validation, message for message: the strictness that makes the fake worth testing against.

The original runtime sent histories OpenAI refuses (tool calls left unanswered, tool messages answering nothing,
bookkeeping fields in messages, an empty `tools` array); a fake that accepted them let those bugs through. So a
request OpenAI would refuse gets OpenAI's 400 error object here too, the strict pairing of tool calls and tool
messages included. `OpenAIError` is also how the rest of the fake answers with an error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from fastapi.responses import JSONResponse


class OpenAIError(Exception):
    """An error the fake answers with OpenAI's error object."""

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int = 400,
        type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.status = status
        self.type = type

    def response(self, headers: Mapping[str, str] | None = None) -> JSONResponse:
        return JSONResponse(
            {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}},
            status_code=self.status,
            headers=dict(headers or {}),
        )


_ROLES = ("system", "assistant", "user", "function", "tool", "developer")
_ROLES_TEXT = "'system', 'assistant', 'user', 'function', 'tool', and 'developer'"
_MESSAGE_FIELDS: dict[str, frozenset[str]] = {
    "system": frozenset({"role", "content", "name"}),
    "developer": frozenset({"role", "content", "name"}),
    "user": frozenset({"role", "content", "name"}),
    "assistant": frozenset({"role", "content", "name", "tool_calls", "function_call", "refusal", "audio"}),
    # `name` on tool messages is accepted by OpenAI (its cookbook sends it) though not documented.
    "tool": frozenset({"role", "content", "tool_call_id", "name"}),
    "function": frozenset({"role", "content", "name"}),
}
_BODY_FIELDS = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "temperature",
        "top_p",
        "n",
        "stop",
        "max_tokens",
        "max_completion_tokens",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "user",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "functions",
        "function_call",
        "response_format",
        "seed",
        "service_tier",
        "store",
        "metadata",
        "modalities",
        "audio",
        "prediction",
        "reasoning_effort",
        "verbosity",
        "safety_identifier",
        "prompt_cache_key",
        "web_search_options",
    }
)
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_MISSING_TOOL_OUTPUT = (
    "An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. "
    "The following tool_call_ids did not have response messages: {ids}"
)
_ORPHAN_TOOL_MESSAGE = (
    "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'."
)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _invalid_type(param: str, expected: str, value: Any) -> OpenAIError:
    return OpenAIError(
        f"Invalid type for '{param}': expected {expected}, but got {_json_type(value)} instead.",
        param=param,
        code="invalid_type",
    )


def _missing(param: str) -> OpenAIError:
    return OpenAIError(f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")


def validate_chat_body(body: Any) -> None:
    """Refuse what OpenAI's chat-completions endpoint refuses, with its messages.

    Args:
        body: The decoded request body.

    Raises:
        OpenAIError: The first problem found (400).
    """
    if not isinstance(body, dict):
        raise _invalid_type("body", "an object", body)
    unknown = sorted(set(body) - _BODY_FIELDS)
    if unknown:
        raise OpenAIError(f"Unrecognized request argument supplied: {unknown[0]}")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise OpenAIError("you must provide a model parameter")
    _validate_messages(body)
    _validate_tools(body)
    _validate_options(body)


def _validate_messages(body: dict[str, Any]) -> None:
    if "messages" not in body:
        raise _missing("messages")
    messages = body["messages"]
    if not isinstance(messages, list):
        raise _invalid_type("messages", "an array", messages)
    if not messages:
        raise OpenAIError(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            param="messages",
            code="empty_array",
        )
    for index, message in enumerate(messages):
        _validate_message(index, message)
    _validate_pairing(messages)


def _validate_message(index: int, message: Any) -> None:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise _invalid_type(where, "an object", message)
    if "role" not in message:
        raise _missing(f"{where}.role")
    role = message["role"]
    if role not in _ROLES:
        raise OpenAIError(
            f"Invalid value: '{role}'. Supported values are: {_ROLES_TEXT}.",
            param=f"{where}.role",
            code="invalid_value",
        )
    extra = sorted(set(message) - _MESSAGE_FIELDS[role])
    if extra:
        raise OpenAIError(f"Additional properties are not allowed ('{extra[0]}' was unexpected) - 'messages.{index}'")

    has_tool_calls = role == "assistant" and message.get("tool_calls") is not None
    content = message.get("content")
    if content is None:
        # Only an assistant message that calls tools (or the legacy function) may go without content.
        if not (role == "assistant" and (has_tool_calls or message.get("function_call"))):
            if "content" not in message:
                raise _missing(f"{where}.content")
            raise _invalid_type(f"{where}.content", "one of a string or array of objects", content)
    elif isinstance(content, list):
        for part_index, part in enumerate(content):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise _invalid_type(f"{where}.content[{part_index}]", "an object with a 'type'", part)
    elif not isinstance(content, str):
        raise _invalid_type(f"{where}.content", "one of a string or array of objects", content)

    if role == "tool":
        if not isinstance(message.get("tool_call_id"), str) or not message["tool_call_id"]:
            raise OpenAIError(
                "Missing parameter 'tool_call_id': messages with role 'tool' must have a 'tool_call_id'.",
                param=f"{where}.tool_call_id",
                code="missing_required_parameter",
            )
    if "name" in message and not isinstance(message["name"], str):
        raise _invalid_type(f"{where}.name", "a string", message["name"])
    if has_tool_calls:
        _validate_tool_calls(where, message["tool_calls"])


def _validate_tool_calls(where: str, tool_calls: Any) -> None:
    if not isinstance(tool_calls, list):
        raise _invalid_type(f"{where}.tool_calls", "an array", tool_calls)
    if not tool_calls:
        raise OpenAIError(
            f"Invalid '{where}.tool_calls': empty array. Expected an array with minimum length 1, "
            "but got an empty array instead.",
            param=f"{where}.tool_calls",
            code="empty_array",
        )
    for call_index, call in enumerate(tool_calls):
        at = f"{where}.tool_calls[{call_index}]"
        if not isinstance(call, dict):
            raise _invalid_type(at, "an object", call)
        if not isinstance(call.get("id"), str) or not call["id"]:
            raise _missing(f"{at}.id")
        if call.get("type") != "function":
            raise OpenAIError(
                f"Invalid value: '{call.get('type')}'. Supported values are: 'function'.",
                param=f"{at}.type",
                code="invalid_value",
            )
        function = call.get("function")
        if not isinstance(function, dict):
            raise _missing(f"{at}.function")
        if not isinstance(function.get("name"), str) or not function["name"]:
            raise _missing(f"{at}.function.name")
        if "arguments" not in function:
            raise _missing(f"{at}.function.arguments")
        if not isinstance(function["arguments"], str):
            # OpenAI wants the arguments JSON-encoded; an object here is a classic client bug.
            raise _invalid_type(f"{at}.function.arguments", "a string", function["arguments"])


def _validate_pairing(messages: list[dict[str, Any]]) -> None:
    """Invariant I1/I2 as OpenAI enforces it: each tool-call message is answered in full, right after it."""
    seen_ids: dict[str, int] = {}
    unanswered: list[str] = []  # call ids of the open assistant tool-call message, in order
    open_index = -1
    for index, message in enumerate(messages):
        role = message["role"]
        if role == "tool":
            call_id = message["tool_call_id"]
            if call_id not in unanswered:
                # Answers nothing, answers a call of an older message, or answers one twice.
                raise OpenAIError(_ORPHAN_TOOL_MESSAGE, param=f"messages.[{index}].role")
            unanswered.remove(call_id)
            continue
        if unanswered:
            raise OpenAIError(
                _MISSING_TOOL_OUTPUT.format(ids=", ".join(unanswered)), param=f"messages.[{open_index}].role"
            )
        if role == "assistant" and message.get("tool_calls"):
            for call in message["tool_calls"]:
                call_id = call["id"]
                if call_id in seen_ids:
                    raise OpenAIError(
                        f"Invalid 'messages[{index}].tool_calls': duplicate tool call id '{call_id}' "
                        f"(already used in messages[{seen_ids[call_id]}]).",
                        param=f"messages[{index}].tool_calls",
                        code="invalid_value",
                    )
                seen_ids[call_id] = index
                unanswered.append(call_id)
            open_index = index
    if unanswered:
        raise OpenAIError(_MISSING_TOOL_OUTPUT.format(ids=", ".join(unanswered)), param=f"messages.[{open_index}].role")


def _validate_tools(body: dict[str, Any]) -> None:
    if "tools" in body:
        tools = body["tools"]
        if not isinstance(tools, list):
            raise _invalid_type("tools", "an array", tools)
        if not tools:
            raise OpenAIError(
                "Invalid 'tools': empty array. Expected an array with minimum length 1, "
                "but got an empty array instead.",
                param="tools",
                code="empty_array",
            )
        for index, tool in enumerate(tools):
            _validate_tool(index, tool)
    if "tool_choice" in body:
        choice = body["tool_choice"]
        if not body.get("tools"):
            raise OpenAIError(
                "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.",
                param="tool_choice",
            )
        names = {tool["function"]["name"] for tool in body["tools"]}
        if isinstance(choice, str):
            if choice not in ("none", "auto", "required"):
                raise OpenAIError(
                    f"Invalid value: '{choice}'. Supported values are: 'none', 'auto', and 'required'.",
                    param="tool_choice",
                    code="invalid_value",
                )
        elif isinstance(choice, dict):
            function = choice.get("function")
            name = function.get("name") if isinstance(function, dict) else None
            if choice.get("type") != "function" or name not in names:
                raise OpenAIError(
                    f"Invalid value for 'tool_choice': no function named '{name}' was specified in the 'tools' "
                    "parameter.",
                    param="tool_choice",
                )
        else:
            raise _invalid_type("tool_choice", "one of a string or object", choice)


def _validate_tool(index: int, tool: Any) -> None:
    where = f"tools[{index}]"
    if not isinstance(tool, dict):
        raise _invalid_type(where, "an object", tool)
    if tool.get("type") != "function":
        raise OpenAIError(
            f"Invalid value: '{tool.get('type')}'. Supported values are: 'function' and 'custom'.",
            param=f"{where}.type",
            code="invalid_value",
        )
    function = tool.get("function")
    if not isinstance(function, dict):
        raise _missing(f"{where}.function")
    name = function.get("name")
    if not isinstance(name, str):
        raise _missing(f"{where}.function.name")
    if not _TOOL_NAME.match(name):
        raise OpenAIError(
            f"Invalid '{where}.function.name': string does not match pattern. Expected a string that matches the "
            "pattern '^[a-zA-Z0-9_-]+$'.",
            param=f"{where}.function.name",
            code="invalid_value",
        )
    if "description" in function and not isinstance(function["description"], str):
        raise _invalid_type(f"{where}.function.description", "a string", function["description"])
    if "parameters" in function:
        parameters = function["parameters"]
        if not isinstance(parameters, dict):
            raise _invalid_type(f"{where}.function.parameters", "an object", parameters)
        if parameters.get("type") != "object":
            raise OpenAIError(
                f"Invalid schema for function '{name}': schema must be a JSON Schema of 'type: \"object\"', "
                f"got 'type: \"{parameters.get('type')}\"'.",
                param=f"{where}.function.parameters",
                code="invalid_function_parameters",
            )


def _validate_options(body: dict[str, Any]) -> None:
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _invalid_type("stream", "a boolean", stream)
    if body.get("stream_options") is not None and not stream:
        raise OpenAIError(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.", param="stream_options"
        )
    temperature = body.get("temperature")
    if temperature is not None:
        if isinstance(temperature, bool) or not isinstance(temperature, int | float):
            raise _invalid_type("temperature", "a decimal", temperature)
        if not 0 <= temperature <= 2:
            raise OpenAIError(
                f"Invalid 'temperature': decimal out of range. Expected a value between 0 and 2, but got "
                f"{temperature} instead.",
                param="temperature",
                code="decimal_out_of_range",
            )
    n = body.get("n")
    if n is not None and n != 1:
        # Not an OpenAI limit: the fake answers one choice and says so rather than silently ignoring `n`.
        raise OpenAIError("The fake LLM supports only n=1.", param="n", code="unsupported_value")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise _invalid_type("user", "a string", user)
