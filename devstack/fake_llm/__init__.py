"""A scriptable fake of an OpenAI-compatible LLM provider, served over real HTTP.

The demo and the tests talk to it exactly as the worker talks to a real provider (httpx, JSON, SSE), so the whole
request/response path is exercised. It is as strict as OpenAI about the things the original runtime got wrong: a
history whose tool calls are not answered (bug B1/B3, "No tool output found ..."), a tool message that answers
nothing ("No tool call found ..."), bookkeeping fields leaking into messages, an empty `tools` array. A request
OpenAI would refuse gets OpenAI's 400 error object here too, so a test that passes against the fake does not
fail in production on a malformed history. It can also have a context window (`context_window`,
`set_context_window`): a prompt longer than it gets OpenAI's `context_length_exceeded` 400, counted with
`estimate_prompt_tokens`, so compaction and overflow handling can be tested without a real model.

Replies come from scripts queued per session (the body's `user` field, which the LLM activity sets to the session
id), then from the "*" queue, then from a small deterministic "brain" good enough for the demo: it classifies by
keywords, calls `execute_command` when asked to run something, and summarises tool results.

It is a test double, for the embedded dev stack (`python -m devstack dev | demo`); production settings never point
at it.

Use it in-process::

    async with FakeLlmServer() as server:
        server.script("s1", [FakeReply(content="hello")])
        ...  # point the LLM activity at server.chat_completions_url
        assert server.requests("s1")[0]["messages"][-1]["content"] == "hi"

or as a process: `python -m devstack.fake_llm --port 8002` (`./run fake-llm`, see `serve`).

Split by concern: `_script` (what a test queues), `_validation` (OpenAI's refusals), `_request` and `_tokens`
(reading a request, the context window), `_brain` (the default replies), `_render` (completion JSON and stream
chunks), `_state` (`FakeLlm`), `_app` (HTTP), `_server` (`FakeLlmServer`), `_cli` (`serve`, `main`).
"""

from devstack.fake_llm._app import FAKE_MODEL_ID, ContextWindowBody, create_app
from devstack.fake_llm._brain import classify, command_to_run, default_reply
from devstack.fake_llm._cli import main, serve
from devstack.fake_llm._render import completion_chunks, completion_json
from devstack.fake_llm._request import CLASSIFICATION_MARKER, purpose_of, session_of, text_of
from devstack.fake_llm._script import DEFAULT_QUEUE, FakeReply, FakeToolCall, FakeUsage, Purpose, ScriptBody
from devstack.fake_llm._server import FakeLlmServer
from devstack.fake_llm._state import FakeLlm, ReceivedRequest
from devstack.fake_llm._tokens import (
    BYTES_PER_TOKEN,
    MESSAGE_OVERHEAD_TOKENS,
    context_length_exceeded,
    estimate_prompt_tokens,
)
from devstack.fake_llm._validation import OpenAIError, validate_chat_body

__all__ = [
    "BYTES_PER_TOKEN",
    "CLASSIFICATION_MARKER",
    "DEFAULT_QUEUE",
    "FAKE_MODEL_ID",
    "MESSAGE_OVERHEAD_TOKENS",
    "ContextWindowBody",
    "FakeLlm",
    "FakeLlmServer",
    "FakeReply",
    "FakeToolCall",
    "FakeUsage",
    "OpenAIError",
    "Purpose",
    "ReceivedRequest",
    "ScriptBody",
    "classify",
    "command_to_run",
    "completion_chunks",
    "completion_json",
    "context_length_exceeded",
    "create_app",
    "default_reply",
    "estimate_prompt_tokens",
    "main",
    "purpose_of",
    "serve",
    "session_of",
    "text_of",
    "validate_chat_body",
]
