"""Prompts exchanged between the agent graph and the chat model, and their parsing."""

from __future__ import annotations

import re
from dataclasses import dataclass

PLANNER_PROMPT = (
    "You are the planner of a tool-using agent. Tools: "
    "calculator (argument: one arithmetic expression), "
    "word_count (argument: the text to count). "
    "Reply with exactly two lines and nothing else:\n"
    "TOOL: <tool name>\n"
    "ARGUMENT: <argument>"
)
ANSWER_PROMPT = (
    "You are a concise assistant. Answer the request in one sentence, using the tool result you are given."
)

_PLAN_RE = re.compile(
    r"^\s*TOOL:\s*(?P<tool>\S+)\s*$\s*^\s*ARGUMENT:\s*(?P<argument>.*)$", re.MULTILINE | re.IGNORECASE
)
_ANSWER_RE = re.compile(
    r"^Request: (?P<request>.*)\nTool: (?P<tool>.*)\nTool result: (?P<result>.*)$", re.DOTALL
)


@dataclass(frozen=True)
class Plan:
    """Which tool to call and with what argument."""

    tool: str
    argument: str


def format_plan(plan: Plan) -> str:
    """The planner reply format (what a model is asked to produce)."""
    return f"TOOL: {plan.tool}\nARGUMENT: {plan.argument}"


def parse_plan(reply: str, fallback_text: str) -> Plan:
    """Parse a planner reply; anything unparseable falls back to counting words of the input."""
    match = _PLAN_RE.search(reply)
    if not match:
        return Plan("word_count", fallback_text)
    return Plan(match.group("tool").strip().lower(), match.group("argument").strip())


def format_answer_request(request: str, tool: str, result: str) -> str:
    """The user message given to the model for the final answer."""
    return f"Request: {request}\nTool: {tool}\nTool result: {result}"


def parse_answer_request(message: str) -> tuple[str, str, str] | None:
    """Inverse of :func:`format_answer_request` (used by the fake model)."""
    match = _ANSWER_RE.match(message)
    if not match:
        return None
    return match.group("request"), match.group("tool"), match.group("result")
