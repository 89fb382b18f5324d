"""Content by reference: what workflow code knows about text it does not hold.

A coding session reads whole files and writes whole files. Carried inline, one 3 MB tool result exceeded Temporal's
payload limits and wedged the session for good, and every LLM call re-sent everything. So large text is stored by
the edge that receives it (the client for tool results, user messages and edited arguments; the LLM activity for
what the model writes) and enters Temporal as a `ContentRef`: message content is a `ContentRef` in place of the
string, and a large tool-argument value is a *marker*, `{"__agent_runtime_content__": <ContentRef>}`, in place of
the value. Workflow code reads only a reference's size and preview; the client, the API and the LLM activity
resolve references (activities/content_store.py).

The limits below are the bound on what one message, one argument set or one input adds to workflow state.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from workflows.model import (
    ChatMessage,
    ContentRef,
    ToolResult,
    UserMessage,
)

# Text longer than this (characters) is stored by reference by the edges that receive it.
INLINE_TEXT_LIMIT = 8 * 1024
# Tool arguments whose JSON is longer than this get their largest string values stored by reference.
INLINE_ARGUMENTS_LIMIT = 16 * 1024
# Argument strings shorter than this are never worth a reference.
OFFLOAD_VALUE_MIN = 1024
# The most a caller that bypasses the client (a raw Temporal signal) may send inline; beyond it the input is refused
# (an update) or cut with a visible marker (a signal), so workflow state stays bounded whoever sends.
RAW_INPUT_LIMIT = 64 * 1024
PREVIEW_CHARS = 500
REF_MARKER_KEY = "__agent_runtime_content__"

Content = str | ContentRef | None


def size_of(content: Content) -> int:
    """Length in characters of inline or referenced text."""
    if content is None:
        return 0
    return content.size if isinstance(content, ContentRef) else len(content)


def preview_of(content: Content, limit: int = PREVIEW_CHARS) -> str:
    """The first characters of the text, inline or referenced."""
    if content is None:
        return ""
    text = content.preview if isinstance(content, ContentRef) else content
    return text[:limit]


def is_blank(content: Content) -> bool:
    if isinstance(content, ContentRef):
        return content.size == 0 or (not content.preview.strip() and content.size <= len(content.preview))
    return not (content or "").strip()


def ref_marker(ref: ContentRef) -> dict[str, Any]:
    """A large JSON value (a tool argument) replaced by its reference."""
    return {REF_MARKER_KEY: ref.model_dump(mode="json")}


def marker_ref(value: Any) -> ContentRef | None:
    """The reference a marker stands for, or None when `value` is not a marker."""
    if isinstance(value, dict) and len(value) == 1 and REF_MARKER_KEY in value:
        try:
            return ContentRef.model_validate(value[REF_MARKER_KEY])
        except ValueError:
            return None
    return None


def refs_in(value: Any) -> list[ContentRef]:
    """Every reference marker inside a JSON-like value (arguments, metadata), depth first."""
    found: list[ContentRef] = []
    stack = [value]
    while stack:
        item = stack.pop()
        ref = marker_ref(item)
        if ref is not None:
            found.append(ref)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def substitute_refs(value: Any, texts: Mapping[str, str]) -> Any:
    """`value` with each marker replaced by its content (`texts` maps sha256 to text; json content is parsed).

    A marker whose content is missing from `texts` is left in place.
    """
    ref = marker_ref(value)
    if ref is not None:
        text = texts.get(ref.sha256)
        if text is None:
            return value
        return json.loads(text) if ref.media == "json" else text
    if isinstance(value, dict):
        return {key: substitute_refs(item, texts) for key, item in value.items()}
    if isinstance(value, list):
        return [substitute_refs(item, texts) for item in value]
    return value


def placeholder(ref: ContentRef) -> str:
    """What stands for referenced content where it is not worth sending (an old tool argument in a prompt)."""
    return f"[{ref.size:,} characters, not repeated here]"


def compact_refs(value: Any) -> Any:
    """`value` with each marker replaced by a short placeholder string."""
    ref = marker_ref(value)
    if ref is not None:
        return placeholder(ref)
    if isinstance(value, dict):
        return {key: compact_refs(item) for key, item in value.items()}
    if isinstance(value, list):
        return [compact_refs(item) for item in value]
    return value


def json_size(value: Any) -> int:
    """Characters of `value` as compact JSON (what it adds to a payload, roughly)."""
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str))


def message_size(message: ChatMessage) -> int:
    """What a history message adds to workflow state, in characters (content, arguments, a fixed overhead)."""
    arguments = sum(json_size(call.arguments) + len(call.id) + len(call.name) for call in message.tool_calls)
    reference = 300 if isinstance(message.content, ContentRef) else size_of(message.content)
    return 200 + reference + arguments


def clip_text(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, a visible note of what was cut included."""
    if len(text) <= limit:
        return text
    note = f"\n[... {len(text):,} characters in all; the rest was cut: too long to keep inline]"
    return text[: max(0, limit - len(note))] + note


def text_or_preview(content: Content) -> str:
    """The text when inline, else the preview with a note that the rest is stored (for messages built from it)."""
    if isinstance(content, ContentRef):
        rest = content.size - len(content.preview)
        return content.preview + (f" [... {rest:,} more characters]" if rest > 0 else "")
    return content or ""


def raw_size(value: Any) -> int:
    """Characters an inline input carries (its text, or its JSON)."""
    return len(value) if isinstance(value, str) else json_size(value)


def clip_user_message(message: UserMessage) -> UserMessage:
    """A raw signal's user message cut to `RAW_INPUT_LIMIT` (an update over the limit is refused instead)."""
    if isinstance(message.content, str) and len(message.content) > RAW_INPUT_LIMIT:
        return message.model_copy(update={"content": clip_text(message.content, RAW_INPUT_LIMIT)})
    return message


def clip_tool_result(result: ToolResult) -> ToolResult:
    """A raw signal's tool result cut to `RAW_INPUT_LIMIT`, as text (an update over the limit is refused instead)."""
    if raw_size(result.result) + raw_size(result.error or "") <= RAW_INPUT_LIMIT:
        return result
    if result.error:
        return result.model_copy(update={"result": None, "error": clip_text(result.error, RAW_INPUT_LIMIT)})
    text = result.result if isinstance(result.result, str) else json.dumps(result.result, ensure_ascii=False)
    return result.model_copy(update={"result": clip_text(text, RAW_INPUT_LIMIT)})
