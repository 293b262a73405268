"""The agent: a LangGraph ``plan -> tool -> answer`` graph checkpointed in PostgreSQL."""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from agent_app import prompts
from agent_app.llm import ChatModel, Message
from agent_app.tools import run_tool

# How many earlier conversation messages of the thread are shown to the model.
HISTORY_WINDOW = 10


class AgentState(TypedDict, total=False):
    """Graph state; ``history`` accumulates over every run of a thread."""

    input: str
    tool: str
    argument: str
    tool_result: str
    answer: str
    history: Annotated[list[Message], operator.add]


def build_graph(model: ChatModel, checkpointer: BaseCheckpointSaver) -> CompiledStateGraph:
    """Compile the agent graph. The answer node emits ``{"token": ...}`` on the custom stream."""

    def plan(state: AgentState) -> dict[str, Any]:
        reply = model.complete(
            [
                {"role": "system", "content": prompts.PLANNER_PROMPT},
                {"role": "user", "content": state["input"]},
            ]
        )
        chosen = prompts.parse_plan(reply, fallback_text=state["input"])
        return {"tool": chosen.tool, "argument": chosen.argument}

    def tool(state: AgentState) -> dict[str, Any]:
        return {"tool_result": run_tool(state["tool"], state["argument"])}

    def answer(state: AgentState) -> dict[str, Any]:
        request = prompts.format_answer_request(state["input"], state["tool"], state["tool_result"])
        messages: list[Message] = [{"role": "system", "content": prompts.ANSWER_PROMPT}]
        messages += state.get("history", [])[-HISTORY_WINDOW:]
        messages.append({"role": "user", "content": request})
        write = get_stream_writer()
        pieces: list[str] = []
        for token in model.stream(messages):
            write({"token": token})
            pieces.append(token)
        text = "".join(pieces).strip()
        return {
            "answer": text,
            "history": [{"role": "user", "content": state["input"]}, {"role": "assistant", "content": text}],
        }

    builder = StateGraph(AgentState)
    builder.add_node("plan", plan)
    builder.add_node("tool", tool)
    builder.add_node("answer", answer)
    builder.add_edge(START, "plan")
    builder.add_edge("plan", "tool")
    builder.add_edge("tool", "answer")
    builder.add_edge("answer", END)
    return builder.compile(checkpointer=checkpointer)


def thread_config(thread_id: str) -> dict[str, Any]:
    """LangGraph config selecting the checkpoint thread."""
    return {"configurable": {"thread_id": thread_id}}
