"""How the orchestrator picks an agent for a user message (spec §1 "Routing").

The LLM classifies the message (a separate non-streaming call); its JSON answer is mapped with the full label
table, including the short labels `code`/`plan`/`explain` (bug B12). When the call or the parse fails, keywords
decide and the fallback is counted, so a silently broken classifier shows up in the metrics.
"""

from __future__ import annotations

import json
import re

from pydantic import BaseModel

from workflows.agents import AGENTS
from workflows.model import AgentType

CLASSIFICATION_SYSTEM_PROMPT = "You are a request classifier. You respond only with JSON."
CLASSIFICATION_TEMPERATURE = 0.3

LABELS: dict[str, AgentType] = {
    "coder": AgentType.CODER,
    "code": AgentType.CODER,
    "architect": AgentType.ARCHITECT,
    "plan": AgentType.ARCHITECT,
    "debug": AgentType.DEBUG,
    "ask": AgentType.ASK,
    "explain": AgentType.ASK,
    "universal": AgentType.UNIVERSAL,
}

# Order matters: the first group with a matching keyword wins, as in the original.
_KEYWORDS: list[tuple[AgentType, tuple[str, ...]]] = [
    (AgentType.CODER, ("create", "write", "implement", "fix", "code", "refactor", "modify")),
    (AgentType.ARCHITECT, ("design", "architecture", "plan", "spec", "blueprint")),
    (AgentType.DEBUG, ("debug", "error", "bug", "problem", "why", "investigate", "crash")),
    (AgentType.ASK, ("explain", "what is", "how does", "help", "understand")),
]


class Route(BaseModel):
    agent: AgentType
    confidence: str
    reason: str
    method: str  # "llm", "keywords" or "single_agent"


def classification_prompt(message: str, candidates: frozenset[AgentType]) -> str:
    """The user turn of the classification call; the message is data, so it is quoted as JSON."""
    lines = [
        f"- {agent.value}: {AGENTS[agent].description}"
        for agent in AgentType
        if agent in candidates and agent is not AgentType.ORCHESTRATOR
    ]
    return (
        "Pick the agent that should handle the user's request.\n"
        "Agents:\n" + "\n".join(lines) + "\n\n"
        f"Request (JSON string): {json.dumps(message, ensure_ascii=False)}\n\n"
        'Answer with JSON only: {"agent": "<agent>", "confidence": "high|medium|low", "reasoning": "<why>"}'
    )


class ClassificationError(ValueError):
    """The classifier's answer could not be used."""


def parse_classification(text: str, candidates: frozenset[AgentType]) -> Route:
    """Read the classifier's JSON (bare or in a ``` fence); an unknown label goes to the coder."""
    fenced = re.search(r"```(?:json)?\s*(\{.*?\})\s*```", text, re.DOTALL)
    raw = fenced.group(1) if fenced else text[text.find("{") : text.rfind("}") + 1]
    try:
        data = json.loads(raw)
    except ValueError:
        raise ClassificationError(f"classifier did not answer JSON: {text[:80]!r}") from None
    if not isinstance(data, dict) or not isinstance(data.get("agent"), str):
        raise ClassificationError(f"classifier answer has no 'agent': {text[:80]!r}")
    agent = LABELS.get(data["agent"].strip().lower(), AgentType.CODER)
    if agent not in candidates:
        # The classifier may name an agent this session does not have (bug L12).
        agent = AgentType.CODER if AgentType.CODER in candidates else AgentType.UNIVERSAL
    confidence = str(data.get("confidence", "medium")).lower()
    return Route(agent=agent, confidence=confidence, reason=str(data.get("reasoning", "")), method="llm")


def route_by_keywords(message: str, candidates: frozenset[AgentType]) -> Route:
    """The fallback when classification fails: first matching keyword group, else the coder."""
    text = message.lower()
    agent = next((a for a, words in _KEYWORDS if any(w in text for w in words)), AgentType.CODER)
    if agent not in candidates:
        agent = AgentType.UNIVERSAL
    return Route(agent=agent, confidence="low", reason="Keyword fallback", method="keywords")


def single_agent_route(candidates: frozenset[AgentType]) -> Route | None:
    """With only orchestrator + universal registered, routing needs no LLM call."""
    if candidates == frozenset({AgentType.ORCHESTRATOR, AgentType.UNIVERSAL}):
        return Route(agent=AgentType.UNIVERSAL, confidence="high", reason="Single-agent mode", method="single_agent")
    return None
