"""Deterministic tools the agent can call."""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable

_BIN_OPS: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY_OPS: dict[type[ast.unaryop], Callable[[float], float]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}
_MAX_EXPONENT = 64

# A run of digits, operators, parentheses and spaces containing at least one operator.
EXPRESSION_RE = re.compile(r"[-+(]*\s*\d[\d.\s]*(?:[-+*/%]{1,2}\s*[-+(]*\s*\d[\d.\s]*\)*\s*)+\)*")


class ToolError(ValueError):
    """The tool could not handle its argument."""


def _evaluate(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int | float)
        and not isinstance(node.value, bool)
    ):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BIN_OPS:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > _MAX_EXPONENT:
            raise ToolError("exponent too large")
        try:
            return _BIN_OPS[type(node.op)](left, right)
        except ZeroDivisionError as exc:
            raise ToolError("division by zero") from exc
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY_OPS:
        return _UNARY_OPS[type(node.op)](_evaluate(node.operand))
    raise ToolError("only numbers and + - * / // % ** ( ) are allowed")


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression safely (no names, calls or attributes)."""
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ToolError(f"not an arithmetic expression: {expression!r}") from exc
    result = _evaluate(tree)
    if isinstance(result, float) and result.is_integer():
        result = int(result)
    return f"{expression.strip()} = {result}"


def word_count(text: str) -> str:
    """Count words and characters."""
    return f"{len(text.split())} words, {len(text)} characters"


TOOLS: dict[str, Callable[[str], str]] = {"calculator": calculator, "word_count": word_count}


def find_expression(text: str) -> str | None:
    """The first arithmetic expression inside ``text``, if any."""
    match = EXPRESSION_RE.search(text)
    return match.group(0).strip() if match else None


def run_tool(name: str, argument: str) -> str:
    """Run tool ``name``; unknown tools and tool errors become a readable result string."""
    tool = TOOLS.get(name)
    if tool is None:
        return f"error: unknown tool {name!r}"
    try:
        return tool(argument)
    except ToolError as exc:
        return f"error: {exc}"
