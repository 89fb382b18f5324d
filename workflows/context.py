"""Fitting a conversation into the model's context window without ever breaking tool-call pairing.

Thirty reads of a 120 KB file overflow a 100k-token model, and a provider's `context_length_exceeded` is final for
that request: sending the whole history every time wedged long sessions. Each request is therefore built to the
window:

- the system prompt, the tools and the open turn (from the last user message on) always go in;
- older turns go in whole, newest first, while they fit; the first that does not fit ends the selection, so what
  the model sees is one contiguous, provider-valid stretch (a tool call is never separated from its result, because
  both always sit in the same turn);
- a text longer than a share of the window (an over-long tool result, a pasted log) is cut, with a visible marker,
  so one file cannot crowd out the conversation; when the open turn alone is too long, its texts are cut harder.

Token counts are estimated from characters, deliberately on the high side (code tokenizes densely). The selection
is pure: the LLM activity runs it over message heads (sizes are known without fetching referenced content), then
fetches only what goes in. The full transcript is untouched: the history endpoint, the projection and the CLI see
everything.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from workflows.content import compact_refs, json_size, size_of
from workflows.model import ChatMessage

# Characters per token, on the high side of real tokenizers (~4 for English prose, ~3 for code).
CHARS_PER_TOKEN = 3.0
# Role, name, call ids and separators of one message.
MESSAGE_OVERHEAD_TOKENS = 8
# Kept free for the answer: at most this much, and at most an eighth of the window.
ANSWER_RESERVE_TOKENS = 4096
# No single text may take more than this share of what is left for the conversation.
TEXT_SHARE = 0.25
# However tight the window, a cut text keeps at least this much.
MIN_TEXT_CHARS = 1000
MIN_WINDOW_TOKENS = 1000

# Context windows of well-known model families (tokens), used when no window is configured; first match wins.
_KNOWN_WINDOWS: tuple[tuple[str, int], ...] = (
    ("gpt-4.1", 1_000_000),
    ("gpt-4o", 128_000),
    ("gpt-4-turbo", 128_000),
    ("gpt-5", 400_000),
    ("o1", 200_000),
    ("o3", 200_000),
    ("o4", 200_000),
    ("gpt-3.5-turbo", 16_000),
    ("claude", 200_000),
    ("gemini", 1_000_000),
    ("mistral-large", 128_000),
    ("llama-3.1", 128_000),
    ("llama3", 8_000),
    ("qwen2.5", 32_000),
)
DEFAULT_WINDOW_TOKENS = 32_000


def context_window_for(model: str) -> int:
    """The context window of a model family we know (ignoring a provider prefix such as `openai/`), else 32k."""
    name = model.lower().rsplit("/", 1)[-1]
    return next((tokens for prefix, tokens in _KNOWN_WINDOWS if name.startswith(prefix)), DEFAULT_WINDOW_TOKENS)


def estimate_tokens(chars: int) -> int:
    return math.ceil(chars / CHARS_PER_TOKEN)


def message_chars(message: ChatMessage, cap: int | None = None) -> int:
    """Characters a message puts into a request (its content cut to `cap`; referenced arguments as placeholders)."""
    content = size_of(message.content)
    if cap is not None:
        content = min(content, cap)
    arguments = sum(json_size(compact_refs(call.arguments)) + len(call.name) for call in message.tool_calls)
    return content + arguments


def usable_tokens(window: int, fixed_chars: int) -> int:
    """Tokens left for the conversation once the answer's reserve and the fixed part (prompt, tools) are taken."""
    reserve = min(ANSWER_RESERVE_TOKENS, window // 8)
    return max(0, window - reserve - estimate_tokens(fixed_chars))


@dataclass(frozen=True)
class ContextSelection:
    """Which messages go into a request.

    Attributes:
        start: Index of the first message that goes in; everything from it to the end does.
        caps: Message index -> the most characters of its content that go in (only for texts that are cut).
        needs_older: Everything given fitted and older messages exist: fetch them and extend the selection
            (`extend_selection`).
        tokens: Estimated tokens of the selected messages.
    """

    start: int
    caps: dict[int, int] = field(default_factory=dict)
    needs_older: bool = False
    tokens: int = 0


def select_context(messages: Sequence[ChatMessage], usable: int, *, older_exist: bool = False) -> ContextSelection:
    """Choose the stretch of `messages` (oldest first) that fits `usable` tokens (see the module docstring).

    Args:
        messages: The conversation without the system prompt, oldest first.
        usable: Tokens available for them (`usable_tokens`).
        older_exist: More messages precede `messages` (the archived transcript).

    Returns:
        The selection; the open turn is always in it, even when it alone exceeds `usable`.
    """
    if not messages:
        return ContextSelection(start=0, needs_older=older_exist)
    turns = _turn_starts(messages)
    open_start = turns[-1]
    text_cap = _text_cap(usable)
    open_cap = _fit_open_turn(messages, open_start, usable, text_cap)
    caps = _caps(messages, range(open_start, len(messages)), open_cap)
    used = _tokens(messages, range(open_start, len(messages)), caps)
    start, used = _take_turns(messages, turns[:-1], open_start, used, usable, text_cap, caps)
    return ContextSelection(start=start, caps=caps, needs_older=older_exist and start == 0, tokens=used)


def extend_selection(
    older: Sequence[ChatMessage],
    newer: Sequence[ChatMessage],
    selection: ContextSelection,
    usable: int,
    *,
    older_exist: bool = False,
) -> ContextSelection:
    """`select_context([*older, *newer], usable, ...)`, given `selection`, the selection of `newer` that took all of it
    and asked for older messages (`needs_older`).

    Only `older` is examined: its turns are taken, newest first, with what `newer` left of the budget. Reading back an
    archive of k segments so costs k segments' worth of work, not 1 + 2 + ... + k. (When `newer` does not start with
    a user message, its first turn began in `older`, and the whole stretch is selected again.)
    """
    if not selection.needs_older or selection.start != 0:
        raise ValueError("extend_selection needs a selection that took every message and asked for older ones")
    if not newer or newer[0].role != "user":
        return select_context([*older, *newer], usable, older_exist=older_exist)
    shift = len(older)
    caps = {index + shift: cap for index, cap in selection.caps.items()}
    start, used = _take_turns(older, _turn_starts(older), shift, selection.tokens, usable, _text_cap(usable), caps)
    return ContextSelection(start=start, caps=caps, needs_older=older_exist and start == 0, tokens=used)


def cut_for_context(text: str, cap: int) -> str:
    """`text` cut to `cap` characters, with a marker the model can see and act on."""
    if len(text) <= cap:
        return text
    return (
        text[:cap] + f"\n[... {len(text) - cap:,} more characters omitted to fit the model's context window; "
        "read a smaller part (a line range) if you need them]"
    )


def omitted_note(count: int) -> str:
    """Appended to the system prompt when older messages were left out."""
    return f"\n\n({count:,} earlier messages of this conversation are not shown: they did not fit the context window.)"


_NUMBERS = re.compile(r"\d[\d,]*")


def shrunk_window(window: int, provider_message: str) -> int:
    """A smaller window after the provider refused a request as too long.

    OpenAI's message names the limit and the request's size ("maximum context length is 100000 tokens. However,
    your messages resulted in 123456 tokens"): scale the window by their ratio, with a margin. Without two numbers,
    halve it.
    """
    numbers = [int(n.replace(",", "")) for n in _NUMBERS.findall(provider_message)]
    numbers = [n for n in numbers if n >= MIN_WINDOW_TOKENS]
    if len(numbers) >= 2 and numbers[1] > numbers[0]:
        smaller = int(window * numbers[0] / numbers[1] * 0.9)
    else:
        smaller = window // 2
    return max(MIN_WINDOW_TOKENS, min(smaller, window - 1))


def _text_cap(usable: int) -> int:
    """The most characters of one text that go in (the open turn's texts may be cut harder)."""
    return max(MIN_TEXT_CHARS, int(usable * TEXT_SHARE * CHARS_PER_TOKEN))


def _take_turns(
    messages: Sequence[ChatMessage],
    starts: list[int],
    end: int,
    used: int,
    usable: int,
    text_cap: int,
    caps: dict[int, int],
) -> tuple[int, int]:
    """Take the whole turns that begin at `starts` (the last one ends at `end`), newest first, while they fit in
    `usable` with `used` tokens already taken; the first that does not fit ends the selection.

    Returns:
        Where the selection now starts, and the tokens it takes. `caps` gains the cut texts of the turns taken.
    """
    start = end
    for turn_start in reversed(starts):
        turn = range(turn_start, start)
        turn_caps = _caps(messages, turn, text_cap)
        cost = _tokens(messages, turn, turn_caps)
        if used + cost > usable:
            break
        used += cost
        caps |= turn_caps
        start = turn_start
    return start, used


def _turn_starts(messages: Sequence[ChatMessage]) -> list[int]:
    """Indexes where a turn starts: each user message (and the first message, whatever it is)."""
    starts = [i for i, message in enumerate(messages) if message.role == "user"]
    if not starts or starts[0] != 0:
        starts.insert(0, 0)
    return starts


def _caps(messages: Sequence[ChatMessage], indexes: range, cap: int) -> dict[int, int]:
    return {i: cap for i in indexes if size_of(messages[i].content) > cap}


def _tokens(messages: Sequence[ChatMessage], indexes: range, caps: dict[int, int]) -> int:
    return sum(estimate_tokens(message_chars(messages[i], caps.get(i))) + MESSAGE_OVERHEAD_TOKENS for i in indexes)


def _fit_open_turn(messages: Sequence[ChatMessage], start: int, usable: int, cap: int) -> int:
    """The largest text cap (at most `cap`) with which the open turn fits, by bisection; at least MIN_TEXT_CHARS."""
    indexes = range(start, len(messages))

    def fits(candidate: int) -> bool:
        return _tokens(messages, indexes, _caps(messages, indexes, candidate)) <= usable

    if fits(cap):
        return cap
    low, high = MIN_TEXT_CHARS, cap
    if not fits(low):
        return low
    while high - low > 64:
        middle = (low + high) // 2
        if fits(middle):
            low = middle
        else:
            high = middle
    return low
