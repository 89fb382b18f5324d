"""Inputs from outside are made encodable on the way in: a lone UTF-16 surrogate (what JavaScript's JSON.stringify
writes for a binary file read as text) becomes U+FFFD instead of failing every UTF-8 encoder downstream."""

from __future__ import annotations

import json

import pytest

from workflows.model import (
    CancelTurn,
    HitlDecision,
    SwitchAgent,
    ToolResult,
    UserMessage,
    encodable_json,
    encodable_text,
)


def test_lone_surrogates_are_replaced_anywhere_in_json() -> None:
    value = json.loads('{"k\\ud800": ["a\\udfffb", {"n": 1, "t": "\\ud83d\\ude00 ok"}], "none": null}')
    cleaned = encodable_json(value)
    assert cleaned == {"k\ufffd": ["a\ufffdb", {"n": 1, "t": "\U0001f600 ok"}], "none": None}
    json.dumps(cleaned, ensure_ascii=False).encode()  # encodable now


def test_a_pair_split_over_two_code_points_is_joined_again() -> None:
    assert encodable_text("\ud83d\ude00 and \ud83d alone") == "\U0001f600 and \ufffd alone"


def test_clean_text_is_returned_as_it_is() -> None:
    text = "plain \x00 text \U0001f600"
    assert encodable_json(text) is text


@pytest.mark.parametrize(
    "make",
    [
        lambda bad: UserMessage(content=bad),
        lambda bad: ToolResult(call_id="c", result={"file": bad}),
        lambda bad: ToolResult(call_id="c", error=bad),
        lambda bad: HitlDecision(call_id="c", decision="edit", modified_arguments={"path": bad}, feedback=bad),
        lambda bad: CancelTurn(reason=bad),
        lambda bad: SwitchAgent(agent_type="coder", reason=bad),
    ],
)
def test_every_input_is_encodable(make: object) -> None:
    bad = json.loads('"binary \\udc00\\ud800 x\\udfff tail"')  # a low one first, a high one not followed by a low
    item = make(bad)  # type: ignore[operator]
    assert "binary \ufffd\ufffd x\ufffd tail" in item.model_dump_json()
