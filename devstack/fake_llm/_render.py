"""Rendering a reply as OpenAI's JSON: a `chat.completion` object, or the `chat.completion.chunk`s of a stream.

Kept apart from HTTP so the exact shape OpenAI sends (null content with tool calls, the delta order, the usage
chunk) sits in one place a client's parser is tested against.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from devstack.fake_llm._request import text_of
from devstack.fake_llm._script import FakeReply


@dataclass(frozen=True)
class _RenderedCall:
    id: str
    name: str
    arguments: str | dict[str, Any]


def _render_calls(reply: FakeReply, body: Mapping[str, Any], session: str) -> list[_RenderedCall]:
    # Generated ids are derived from the request so a replayed demo sees the same ids, yet differ per turn because
    # each turn's request has a longer history.
    seed = hashlib.sha256(
        (session + json.dumps(body.get("messages"), sort_keys=True, default=str)).encode()
    ).hexdigest()
    rendered: list[_RenderedCall] = []
    for index, call in enumerate(reply.tool_calls):
        call_id = call.id or "call_" + hashlib.sha256(f"{seed}/{index}".encode()).hexdigest()[:24]
        if isinstance(call.arguments, str):
            arguments: str | dict[str, Any] = call.arguments
        elif call.arguments_format == "object":
            arguments = call.arguments
        else:
            arguments = json.dumps(call.arguments, ensure_ascii=False)
        rendered.append(_RenderedCall(call_id, call.name, arguments))
    return rendered


def _content_of(reply: FakeReply) -> str | None:
    if reply.error_text is not None:
        return f"[Error] {reply.error_text}"
    return reply.content


def _usage(
    reply: FakeReply, body: Mapping[str, Any], content: str | None, calls: list[_RenderedCall]
) -> dict[str, int]:
    if reply.usage is not None:
        prompt, completion = reply.usage.prompt_tokens, reply.usage.completion_tokens
        total = reply.usage.total_tokens if reply.usage.total_tokens is not None else prompt + completion
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}
    # Roughly four characters per token, as OpenAI's rule of thumb; good enough for counters to move.
    prompt_chars = sum(len(text_of(m.get("content"))) for m in body.get("messages") or [] if isinstance(m, dict))
    completion_chars = len(content or "") + sum(len(c.name) + len(json.dumps(c.arguments)) for c in calls)
    prompt, completion = prompt_chars // 4 + 1, completion_chars // 4 + 1
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _finish_reason(reply: FakeReply, calls: list[_RenderedCall]) -> str:
    return reply.finish_reason or ("tool_calls" if calls else "stop")


def completion_json(reply: FakeReply, body: Mapping[str, Any], session: str) -> dict[str, Any]:
    """The non-streaming `chat.completion` object for a reply."""
    calls = _render_calls(reply, body, session)
    content = _content_of(reply)
    message: dict[str, Any] = {
        "role": "assistant",
        # OpenAI sends null content with pure tool calls and "" never; mirror that.
        "content": content if content else (None if calls else ""),
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in calls
        ]
    result: dict[str, Any] = {
        "id": _completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": reply.model or str(body.get("model")),
        "system_fingerprint": "fp_fake",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": _finish_reason(reply, calls)}],
    }
    if not reply.omit_usage:
        result["usage"] = _usage(reply, body, content, calls)
    return result


def completion_chunks(reply: FakeReply, body: Mapping[str, Any], session: str) -> Iterator[dict[str, Any]]:
    """The `chat.completion.chunk` objects of a streamed reply, in OpenAI's order.

    Role first, content in a few pieces, each tool call as a header delta (index, id, name) followed by argument
    fragments, a final empty delta with the finish reason, then the usage chunk when the request asked for it.
    `content_delta_chars`/`argument_delta_chars` make the pieces that many characters long instead of three per
    text. A generator, linear in the reply's size: a 1.5 MB argument in 6-character deltas is 250,000 chunks.
    """
    calls = _render_calls(reply, body, session)
    content = _content_of(reply)
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and bool(options.get("include_usage")) and not reply.omit_usage
    base: dict[str, Any] = {
        "id": _completion_id(),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": reply.model or str(body.get("model")),
        "system_fingerprint": "fp_fake",
    }

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        result = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}
        if include_usage:
            result["usage"] = None
        return result

    yield chunk({"role": "assistant", "content": "" if content else None, "refusal": None})
    for piece in _fragments(content or "", reply.content_delta_chars):
        yield chunk({"content": piece})
    for index, call in enumerate(calls):
        header = {"index": index, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
        yield chunk({"tool_calls": [header]})
        arguments = call.arguments if isinstance(call.arguments, str) else json.dumps(call.arguments)
        for fragment in _fragments(arguments, reply.argument_delta_chars):
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]})
    yield chunk({}, _finish_reason(reply, calls))
    if include_usage:
        yield {**base, "choices": [], "usage": _usage(reply, body, content, calls)}


def _fragments(text: str, size: int | None, default_count: int = 3) -> Iterator[str]:
    """Consecutive non-empty pieces of `text`, `size` characters each (the last may be shorter).

    Without a size, at most `default_count` pieces, so streams still have more than one delta. Each piece is one
    slice of the original, so the whole is linear in `len(text)`.
    """
    if not text:
        return
    step = size if size is not None else max(1, -(-len(text) // default_count))
    for start in range(0, len(text), step):
        yield text[start : start + step]


def _completion_id() -> str:
    return f"chatcmpl-{time.time_ns():x}"
