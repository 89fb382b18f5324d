"""Orchestrator routing: the full label mapping and the keyword fallback (bug B12, L12)."""

import pytest

from workflows.agents import available_agents
from workflows.model import AgentType
from workflows.routing import (
    ClassificationError,
    classification_prompt,
    parse_classification,
    route_by_keywords,
    single_agent_route,
)

MULTI = available_agents(True)
SINGLE = available_agents(False)


@pytest.mark.parametrize(
    ("label", "agent"),
    [
        ("coder", AgentType.CODER),
        ("code", AgentType.CODER),
        ("plan", AgentType.ARCHITECT),
        ("architect", AgentType.ARCHITECT),
        ("explain", AgentType.ASK),
        ("ask", AgentType.ASK),
        ("debug", AgentType.DEBUG),
        ("something-else", AgentType.CODER),
    ],
)
def test_labels(label: str, agent: AgentType) -> None:
    route = parse_classification(f'{{"agent": "{label}", "confidence": "high", "reasoning": "r"}}', MULTI)
    assert route.agent is agent and route.method == "llm"


def test_fenced_json_is_accepted() -> None:
    text = 'Sure:\n```json\n{"agent": "debug", "confidence": "medium", "reasoning": "crash"}\n```'
    route = parse_classification(text, MULTI)
    assert (route.agent, route.confidence, route.reason) == (AgentType.DEBUG, "medium", "crash")


def test_garbage_raises() -> None:
    with pytest.raises(ClassificationError):
        parse_classification("Mock LLM response (static)", MULTI)
    with pytest.raises(ClassificationError):
        parse_classification('{"confidence": "high"}', MULTI)


def test_label_for_an_unavailable_agent_is_mapped() -> None:
    assert parse_classification('{"agent": "universal"}', MULTI).agent is AgentType.UNIVERSAL
    assert parse_classification('{"agent": "coder"}', SINGLE).agent is AgentType.UNIVERSAL


@pytest.mark.parametrize(
    ("text", "agent"),
    [
        ("please refactor utils.py", AgentType.CODER),
        ("design the architecture", AgentType.ARCHITECT),
        ("why does it crash", AgentType.DEBUG),
        ("explain main.py", AgentType.ASK),
        ("hello", AgentType.CODER),
    ],
)
def test_keyword_fallback(text: str, agent: AgentType) -> None:
    route = route_by_keywords(text, MULTI)
    assert route.agent is agent and route.confidence == "low" and route.method == "keywords"


def test_single_agent_mode_routes_without_llm() -> None:
    route = single_agent_route(SINGLE)
    assert route is not None and route.agent is AgentType.UNIVERSAL and route.confidence == "high"
    assert single_agent_route(MULTI) is None


def test_prompt_quotes_the_message_and_names_only_available_agents() -> None:
    prompt = classification_prompt('say "{hi}"', SINGLE)
    assert '"say \\"{hi}\\""' in prompt
    assert "- universal:" in prompt and "- coder:" not in prompt
