"""The context builder (workflows/context.py) and the content-reference helpers (workflows/content.py): pure code."""

from __future__ import annotations

import random

import pytest

from workflows.content import (
    REF_MARKER_KEY,
    clip_text,
    compact_refs,
    marker_ref,
    message_size,
    preview_of,
    ref_marker,
    refs_in,
    size_of,
    substitute_refs,
)
from workflows.context import (
    CHARS_PER_TOKEN,
    MIN_TEXT_CHARS,
    ContextSelection,
    context_window_for,
    cut_for_context,
    estimate_tokens,
    extend_selection,
    message_chars,
    select_context,
    shrunk_window,
    usable_tokens,
)
from workflows.history import ConversationHistory
from workflows.ledger import RecentIds
from workflows.model import (
    ChatMessage,
    ContentRef,
    ToolCall,
)


def ref(size: int, preview: str = "x", sha: str = "a" * 64) -> ContentRef:
    return ContentRef(driver="d", claim={"sha256": sha}, sha256=sha, size=size, preview=preview)


def user(text: str = "question") -> ChatMessage:
    return ChatMessage(role="user", content=text)


def tool_turn(call_id: str, result_chars: int) -> list[ChatMessage]:
    call = ToolCall(id=call_id, name="read_file", arguments={"path": "big.py"})
    return [
        user(f"read {call_id}"),
        ChatMessage(role="assistant", content=None, tool_calls=[call]),
        ChatMessage(role="tool", tool_call_id=call_id, name="read_file", content=ref(result_chars)),
        ChatMessage(role="assistant", content="done"),
    ]


def paired(messages: list[ChatMessage]) -> bool:
    """Every call in the selection is answered inside it, and no tool message answers a call outside it."""
    open_ids: set[str] = set()
    for message in messages:
        if message.role == "tool":
            if message.tool_call_id not in open_ids:
                return False
            open_ids.remove(message.tool_call_id or "")
        else:
            if open_ids:
                return False
            open_ids = {call.id for call in message.tool_calls}
    return not open_ids


# --- the selection ---


def test_everything_fits_in_a_large_window() -> None:
    messages = [m for i in range(5) for m in tool_turn(f"c{i}", 1000)]
    selection = select_context(messages, usable=100_000)
    assert selection.start == 0 and not selection.caps and not selection.needs_older


def test_older_turns_are_dropped_whole_newest_first() -> None:
    messages = [m for i in range(30) for m in tool_turn(f"c{i}", 120_000)]
    usable = usable_tokens(100_000, fixed_chars=2_000)
    selection = select_context(messages, usable)
    chosen = messages[selection.start :]
    assert 0 < selection.start < len(messages)
    assert chosen[0].role == "user", "a selection starts at a turn boundary"
    assert paired(chosen)
    assert selection.tokens <= usable


def test_an_over_long_result_is_cut_to_a_share_of_the_window() -> None:
    messages = tool_turn("c1", 3_000_000)
    usable = usable_tokens(100_000, fixed_chars=0)
    selection = select_context(messages, usable)
    assert selection.start == 0
    [(index, cap)] = selection.caps.items()
    assert messages[index].role == "tool"
    assert cap <= usable * CHARS_PER_TOKEN / 4 + 1


def test_the_open_turn_always_goes_in_and_is_cut_harder_when_needed() -> None:
    calls = [ToolCall(id=f"c{i}", name="read_file", arguments={"path": f"f{i}"}) for i in range(20)]
    turn = [user("read them all"), ChatMessage(role="assistant", tool_calls=calls)]
    turn += [ChatMessage(role="tool", tool_call_id=c.id, name="read_file", content=ref(100_000)) for c in calls]
    older = tool_turn("old", 10_000)
    usable = usable_tokens(32_000, fixed_chars=1_000)
    selection = select_context([*older, *turn], usable)
    assert selection.start == len(older), "the older turn does not fit next to the cut open turn"
    caps = set(selection.caps.values())
    assert len(caps) == 1 and MIN_TEXT_CHARS <= caps.pop() < 100_000
    assert selection.tokens <= usable


def test_an_open_turn_that_cannot_fit_still_goes_in_at_the_minimum_cut() -> None:
    calls = [ToolCall(id=f"c{i}", name="read_file", arguments={}) for i in range(200)]
    turn = [user("read"), ChatMessage(role="assistant", tool_calls=calls)]
    turn += [ChatMessage(role="tool", tool_call_id=c.id, name="read_file", content=ref(50_000)) for c in calls]
    selection = select_context(turn, usable=5_000)
    assert selection.start == 0
    assert set(selection.caps.values()) == {MIN_TEXT_CHARS}


def test_needs_older_only_when_everything_given_fitted() -> None:
    messages = tool_turn("c1", 100)
    assert select_context(messages, 100_000, older_exist=True).needs_older
    assert not select_context(messages, 100_000, older_exist=False).needs_older
    crowded = [m for i in range(10) for m in tool_turn(f"c{i}", 200_000)]
    assert not select_context(crowded, 50_000, older_exist=True).needs_older


def test_referenced_arguments_count_as_placeholders() -> None:
    call = ToolCall(id="w1", name="write_file", arguments={"path": "a.py", "content": ref_marker(ref(1_500_000))})
    message = ChatMessage(role="assistant", tool_calls=[call])
    assert message_chars(message) < 200


def test_a_history_without_user_messages_is_one_turn() -> None:
    messages = [ChatMessage(role="assistant", content="hello")]
    assert select_context(messages, 1_000).start == 0


def test_empty_history() -> None:
    selection = select_context([], 1_000, older_exist=True)
    assert selection.start == 0 and selection.needs_older


def select_back(parts: list[list[ChatMessage]], usable: int) -> tuple[ContextSelection, list[ChatMessage]]:
    """What the LLM activity does over an archived transcript: the newest part first, then older parts while the
    selection asks for them (`parts` oldest first)."""
    history = parts[-1]
    selection = select_context(history, usable, older_exist=len(parts) > 1)
    for index in range(len(parts) - 2, -1, -1):
        if not selection.needs_older:
            break
        selection = extend_selection(parts[index], history, selection, usable, older_exist=index > 0)
        history = [*parts[index], *history]
    return selection, history


def random_turn(rng: random.Random, number: int) -> list[ChatMessage]:
    if rng.random() < 0.5:
        return [user("q" * rng.randint(1, 4_000)), ChatMessage(role="assistant", content="a" * rng.randint(0, 8_000))]
    return tool_turn(f"c{number}", rng.choice([10, 2_000, 30_000, 400_000]))


@pytest.mark.parametrize("seed", range(60))
def test_extending_a_selection_segment_by_segment_equals_selecting_the_whole_stretch(seed: int) -> None:
    """The LLM activity reads an archive back one segment at a time and extends its selection with each; the result
    is the selection of the whole conversation, however it was split (at turns, as archives are, or not)."""
    rng = random.Random(seed)
    messages = [m for number in range(rng.randint(1, 40)) for m in random_turn(rng, number)]
    if rng.random() < 0.2:
        messages.insert(0, ChatMessage(role="assistant", content="a reply whose question was archived earlier"))
    # Archives are cut between turns; a cut inside a turn is handled too.
    turns = [i for i, m in enumerate(messages) if m.role == "user" and i > 0]
    candidates = turns if turns and rng.random() < 0.8 else list(range(1, len(messages)))
    cuts = sorted(rng.sample(candidates, min(len(candidates), rng.randint(0, 6))))
    parts = [messages[a:b] for a, b in zip([0, *cuts], [*cuts, len(messages)], strict=True)]
    usable = usable_tokens(rng.choice([8_000, 32_000, 128_000, 1_000_000]), fixed_chars=3_000)
    selection, history = select_back(parts, usable)
    skipped = len(messages) - len(history)  # the older parts the selection did not ask for
    assert history == messages[skipped:]
    shifted = ContextSelection(
        start=selection.start + skipped,
        caps={index + skipped: cap for index, cap in selection.caps.items()},
        needs_older=selection.needs_older,
        tokens=selection.tokens,
    )
    assert shifted == select_context(messages, usable)


def test_a_selection_is_extended_only_when_it_took_everything() -> None:
    crowded = [m for i in range(10) for m in tool_turn(f"c{i}", 200_000)]
    selection = select_context(crowded, 50_000, older_exist=True)
    with pytest.raises(ValueError, match="asked for older"):
        extend_selection(tool_turn("old", 10), crowded, selection, 50_000)


# --- markers, windows ---


def test_cut_for_context_marks_what_was_left_out() -> None:
    cut = cut_for_context("a" * 10_000, 1_000)
    assert cut.startswith("a" * 1_000) and "9,000 more characters omitted" in cut
    assert cut_for_context("short", 1_000) == "short"


def test_shrunk_window_uses_the_providers_numbers() -> None:
    message = "This model's maximum context length is 100000 tokens. However, your messages resulted in 150000 tokens."
    assert shrunk_window(128_000, message) == int(128_000 * 100_000 / 150_000 * 0.9)
    assert shrunk_window(128_000, "prompt is too long") == 64_000
    assert shrunk_window(1_200, "too long") == 1_000


@pytest.mark.parametrize(
    ("model", "window"),
    [("gpt-4o-mini", 128_000), ("openai/gpt-4o", 128_000), ("claude-3-5-sonnet", 200_000), ("my-model", 32_000)],
)
def test_context_window_for_known_models(model: str, window: int) -> None:
    assert context_window_for(model) == window


def test_usable_tokens_keeps_a_reserve_for_the_answer() -> None:
    assert usable_tokens(100_000, fixed_chars=0) == 100_000 - 4096
    assert usable_tokens(8_000, fixed_chars=3_000) == 8_000 - 1_000 - estimate_tokens(3_000)
    assert usable_tokens(1_000, fixed_chars=100_000) == 0


# --- references ---


def test_markers_round_trip_and_are_found_anywhere() -> None:
    text_ref, json_ref = ref(10_000, sha="b" * 64), ref(20_000, sha="c" * 64).model_copy(update={"media": "json"})
    value = {"a": ref_marker(text_ref), "b": [1, {"c": ref_marker(json_ref)}], REF_MARKER_KEY + "x": "plain"}
    assert {r.sha256 for r in refs_in(value)} == {"b" * 64, "c" * 64}
    resolved = substitute_refs(value, {"b" * 64: "text", "c" * 64: '{"k": [1, 2]}'})
    assert resolved == {"a": "text", "b": [1, {"c": {"k": [1, 2]}}], REF_MARKER_KEY + "x": "plain"}
    assert compact_refs(value)["a"] == "[10,000 characters, not repeated here]"
    assert marker_ref({REF_MARKER_KEY: {"not": "a ref"}}) is None


def test_sizes_and_previews() -> None:
    assert size_of(ref(123)) == 123 and size_of("abc") == 3 and size_of(None) == 0
    assert preview_of(ref(10_000, preview="start")) == "start"
    big = ChatMessage(role="tool", tool_call_id="c", content=ref(3_000_000))
    assert message_size(big) < 1_000, "a referenced text costs the workflow only its reference"
    clipped = clip_text("x" * 1_000, 200)
    assert len(clipped) <= 200 and clipped.startswith("x" * 100) and "1,000 characters in all" in clipped
    assert clip_text("short", 200) == "short"


# --- the history's archive split ---


def test_split_for_archive_keeps_the_newest_turns_within_the_budget() -> None:
    history = ConversationHistory()
    for i in range(10):
        history.add_user(f"q{i}", message_id=f"u{i}", at=None)  # type: ignore[arg-type]
        history.add_assistant("x" * 1_000, [], agent=None, message_id=f"a{i}", at=None)  # type: ignore[arg-type]
    archived, kept = history.split_for_archive(keep_size=3_000)
    assert archived + kept == history.messages
    assert kept[0].role == "user" and 1 <= len(kept) // 2 < 10
    assert sum(message_size(m) for m in kept) <= 3_000 or len(kept) == 2


def test_answered_ids_survive_the_archive() -> None:
    history = ConversationHistory(first_seq=40, answered=["old1", "old2"])
    assert history.has_call("old1") and len(history) == 40


def test_recent_ids_keep_the_newest_in_arrival_order() -> None:
    ids = RecentIds(["z0", "a1"], kept=3)
    for key in ["b2", "a3", "c4", "a5", "b6", "a7"]:
        ids.add(key)
    assert ids.newest() == ["a5", "b6", "a7"], "the newest, not the lexicographically largest"
    assert "a7" in ids and "z0" not in ids
    ids.add("a5")
    assert ids.newest() == ["b6", "a7", "a5"], "a repeat counts as new"
    assert RecentIds([str(i) for i in range(10)], kept=4).newest() == ["6", "7", "8", "9"]
