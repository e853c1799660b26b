"""Band expressions: arithmetic and comparisons over a cleaned image's band and index names, for
rule baselines (``{expr: "(blue + green + red) / 3", above: 0.215, class: cloud}``).

An expression is Python syntax restricted to: band and index names, numbers, ``+ - * / **``,
unary ``-``, comparisons (``< <= > >=``, chained too), ``and``/``or``/``not`` (or ``& | ~``)
between conditions, parentheses, and the functions ``mean(a, b, ...)``, ``min(...)``,
``max(...)``, ``abs(x)`` and ``sqrt(x)``, each taken per pixel. Anything else (attributes,
subscripts, other calls) is refused when the config is loaded, so a config cannot run code.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from functools import reduce
from typing import Any

import numpy as np

_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
    ast.BitAnd: np.logical_and,
    ast.BitOr: np.logical_or,
}
_COMPARE: dict[type, Callable[[Any, Any], Any]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "mean": lambda *a: reduce(operator.add, a) / len(a),
    "min": lambda *a: reduce(np.minimum, a),
    "max": lambda *a: reduce(np.maximum, a),
    "abs": np.abs,
    "sqrt": np.sqrt,
}


class ExpressionError(ValueError):
    """An expression that is not allowed, or names a band the image does not have."""


def parse(expr: str) -> ast.Expression:
    """The checked syntax tree of ``expr``.

    Raises:
        ExpressionError: naming what is not allowed (see the module docstring).
    """
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"{expr!r} is not an expression ({exc.msg})") from None
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS or node.keywords:
                raise ExpressionError(f"{expr!r}: only {', '.join(_FUNCTIONS)}(...) may be called")
            if not node.args:
                raise ExpressionError(f"{expr!r}: {node.func.id}() needs an argument")
        elif isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, int | float):
                raise ExpressionError(f"{expr!r}: {node.value!r} is not a number")
        elif not isinstance(
            node,
            ast.Expression
            | ast.BinOp
            | ast.UnaryOp
            | ast.BoolOp
            | ast.Compare
            | ast.Name
            | ast.Load
            | ast.USub
            | ast.UAdd
            | ast.Not
            | ast.Invert
            | ast.And
            | ast.Or
            | ast.cmpop
            | ast.operator,
        ) or (isinstance(node, ast.operator) and type(node) not in _BINARY):
            raise ExpressionError(f"{expr!r}: {type(node).__name__} is not allowed")
        elif isinstance(node, ast.cmpop) and type(node) not in _COMPARE:
            raise ExpressionError(f"{expr!r}: only < <= > >= compare")
    return tree


def names(expr: str) -> set[str]:
    """The band and index names ``expr`` reads."""
    return _names(parse(expr))


def _names(tree: ast.Expression) -> set[str]:
    called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and id(n) not in called}


def evaluate(expr: str, bands: Mapping[str, np.ndarray]) -> np.ndarray:
    """``expr`` per pixel over ``bands`` (name -> ``(rows, cols)`` array): a float array for
    arithmetic, a bool array for a condition.

    Raises:
        ExpressionError: for a name that is not among ``bands``.
    """
    tree = parse(expr)
    missing = sorted(_names(tree) - set(bands))
    if missing:
        raise ExpressionError(f"{expr!r} reads {', '.join(missing)}, not among the bands {', '.join(bands)}")
    return np.asarray(_eval(tree.body, bands))


def _eval(node: ast.AST, bands: Mapping[str, np.ndarray]) -> Any:
    if isinstance(node, ast.Constant):
        return float(node.value)  # type: ignore[arg-type]  # parse() admits only numbers
    if isinstance(node, ast.Name):
        return np.asarray(bands[node.id], dtype=np.float32)
    if isinstance(node, ast.UnaryOp):
        value = _eval(node.operand, bands)
        if isinstance(node.op, ast.USub):
            return -value
        if isinstance(node.op, ast.UAdd):
            return value
        return np.logical_not(value)  # not, ~
    if isinstance(node, ast.BinOp):
        return _BINARY[type(node.op)](_eval(node.left, bands), _eval(node.right, bands))
    if isinstance(node, ast.BoolOp):
        combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
        return reduce(combine, (_eval(v, bands) for v in node.values))
    if isinstance(node, ast.Compare):
        result, left = None, _eval(node.left, bands)
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = _eval(comparator, bands)
            step = _COMPARE[type(op)](left, right)
            result = step if result is None else np.logical_and(result, step)
            left = right
        return result
    if isinstance(node, ast.Call):
        assert isinstance(node.func, ast.Name)
        return _FUNCTIONS[node.func.id](*(_eval(a, bands) for a in node.args))
    raise ExpressionError(f"{type(node).__name__} is not allowed")  # parse() refuses it first
