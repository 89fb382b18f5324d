"""Token estimation and the context window's refusal: how the fake decides a prompt is too long.

Compaction and overflow handling need a provider that refuses long prompts; a fixed, reproducible count (rather
than a tokenizer) lets tests and benchmarks predict exactly where the limit falls.
"""

from __future__ import annotations

import json
import math
from typing import Any

from devstack.fake_llm._request import text_of
from devstack.fake_llm._validation import OpenAIError

# The token estimate: OpenAI's rule of thumb of about four bytes of English per token, plus the few tokens of framing
# (role, separators) each message costs in its chat format. A tokenizer would be closer, but the fake needs a count
# that tests and benchmarks can reproduce exactly, not a faithful one.
BYTES_PER_TOKEN = 4
MESSAGE_OVERHEAD_TOKENS = 4


def estimate_prompt_tokens(body: Any) -> int:
    """The fake's deterministic count of a chat request's prompt tokens, which its context window is checked against.

    `ceil(B / BYTES_PER_TOKEN) + MESSAGE_OVERHEAD_TOKENS * len(messages)`, where B is the total UTF-8 bytes of every
    message's content (the text of a string or of its text parts), every tool call's function name and arguments
    string, and the `tools` array as compact JSON (`separators=(",", ":")`, `ensure_ascii=False`). Other fields
    (roles, ids, options) are covered by the per-message overhead. Adding a message or a byte anywhere counted never
    lowers the estimate. Malformed bodies are counted as far as they make sense (a non-object body counts 0), since
    refused requests are recorded with their count too.

    Args:
        body: The decoded request body.

    Returns:
        The estimated number of prompt tokens.
    """
    if not isinstance(body, dict):
        return 0
    messages = body.get("messages")
    messages = messages if isinstance(messages, list) else []
    size = 0
    for message in messages:
        if not isinstance(message, dict):
            continue
        size += _utf8_len(text_of(message.get("content")))
        tool_calls = message.get("tool_calls")
        for call in tool_calls if isinstance(tool_calls, list) else []:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                size += _utf8_len(function.get("name")) + _utf8_len(function.get("arguments"))
    if "tools" in body:
        size += _utf8_len(json.dumps(body["tools"], separators=(",", ":"), ensure_ascii=False, default=str))
    return math.ceil(size / BYTES_PER_TOKEN) + MESSAGE_OVERHEAD_TOKENS * len(messages)


def _utf8_len(value: Any) -> int:
    if value is None:
        return 0
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return len(text.encode("utf-8", "surrogatepass"))


def context_length_exceeded(window: int, prompt_tokens: int) -> OpenAIError:
    """OpenAI's refusal of a prompt longer than the model's context window, word for word."""
    return OpenAIError(
        f"This model's maximum context length is {window} tokens. However, your messages resulted in {prompt_tokens} "
        "tokens. Please reduce the length of the messages.",
        param="messages",
        code="context_length_exceeded",
    )
