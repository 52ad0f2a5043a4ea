"""Index arithmetic simplified before printing, so generated code reads ``oh + kh``, not
``oh * 1 - 0 + kh * 1``.

Templates write an index as a formula over named sizes and pass the sizes in; :func:`ix`
substitutes them, folds what is known and prints C::

    ix("oh * SH - PH + kh * DH", SH=1, PH=0, DH=1)      -> "oh + kh"
    ix("oh * SH - PH + kh * DH", SH=2, PH=1, DH=1)      -> "oh * 2 - 1 + kh"
    ix("(cb * COB) / CO_G", cb=0, COB=16, CO_G=32)      -> "0"

A value is an int (a literal) or a string (another expression, an identifier). The formula is C
arithmetic that is also Python syntax: identifiers, integer literals (``32L`` keeps its suffix),
``+ - * / %``, unary minus, parentheses, ``a[i]``, ``f(x)`` (``sizeof(float)``) and casts of a name (``(size_t)n``). ``/`` and ``%`` are C's integer division:
they fold only when both sides are non-negative literals. What is folded: ``x * 1``, ``x * 0``,
``x + 0``, ``x - 0``, ``x / 1``, ``x % 1``, and the literals of a sum or of a product (summed,
multiplied) into one, which stays where the first of them stood. Nothing else is reordered, so
the printed index keeps the shape the template gave it (Inductor does the same with sympy; we
fold only what a person would, and stay exact for C's truncating division).
"""
from __future__ import annotations

import ast
import re
from functools import lru_cache

_LONG = re.compile(r"\b(\d+)L\b")
_CAST = re.compile(r"\((size_t|long long|long|int)\)\s*(\w+)")   # (size_t)n: a cast of a name


def _python(expr: str) -> str:
    """The formula as Python syntax: ``32L`` -> ``_L(32)``, ``(size_t)n`` -> ``_cast_size_t(n)``."""
    expr = _CAST.sub(lambda m: f"_cast_{m.group(1).replace(' ', '_')}({m.group(2)})", expr.strip())
    return _LONG.sub(r"_L(\1)", expr)


class _Lit:
    """An integer literal and whether it is spelled ``long`` (``32L``)."""

    __slots__ = ("v", "long")

    def __init__(self, v: int, long: bool = False):
        self.v, self.long = int(v), long


# An expression tree: _Lit | ("name", text) | ("sum", [(sign, term)]) | ("prod", [factors])
# | ("div", a, b) | ("mod", a, b) | ("neg", a) | ("sub", base, index)


def ix(expr: str, **values) -> str:
    """``expr`` with ``values`` substituted, folded and printed as C (see the module docstring)."""
    return _ix(expr, tuple(sorted((k, v if isinstance(v, str) else int(v)) for k, v in values.items())))


@lru_cache(maxsize=None)
def _ix(expr: str, values: tuple) -> str:
    env = dict(values)
    tree = ast.parse(_python(expr), mode="eval").body
    return _print(_simplify(_build(tree, env)))


def _build(node, env):
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return _Lit(node.value)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "_L":
        return _Lit(node.args[0].value, True)
    if isinstance(node, ast.Name):
        if node.id in env:
            v = env[node.id]
            if isinstance(v, int):
                return _Lit(v)
            return _build(ast.parse(_python(v), mode="eval").body, {})
        return ("name", node.id)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return ("neg", _build(node.operand, env))
    if isinstance(node, ast.Subscript):
        return ("sub", _build(node.value, env), _build(node.slice, env))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        return ("call", node.func.id, [_build(a, env) for a in node.args])
    if isinstance(node, ast.BinOp):
        a, b = _build(node.left, env), _build(node.right, env)
        if isinstance(node.op, ast.Add):
            return ("sum", _terms(a, 1) + _terms(b, 1))
        if isinstance(node.op, ast.Sub):
            return ("sum", _terms(a, 1) + _terms(b, -1))
        if isinstance(node.op, ast.Mult):
            return ("prod", _factors(a) + _factors(b))
        if isinstance(node.op, ast.Div):
            return ("div", a, b)
        if isinstance(node.op, ast.Mod):
            return ("mod", a, b)
    raise ValueError(f"ix: cannot simplify {ast.unparse(node)!r} (only + - * / %, literals, names, a[i])")


def _terms(e, sign):
    if isinstance(e, tuple) and e[0] == "sum":
        return [(s * sign, t) for s, t in e[1]]
    return [(sign, e)]


def _factors(e):
    if isinstance(e, tuple) and e[0] == "prod":
        return list(e[1])
    return [e]


def _simplify(e):
    if isinstance(e, _Lit) or e[0] == "name":
        return e
    kind = e[0]
    if kind == "neg":
        a = _simplify(e[1])
        return _Lit(-a.v, a.long) if isinstance(a, _Lit) else ("sum", [(-1, a)])
    if kind == "sub":
        return ("sub", _simplify(e[1]), _simplify(e[2]))
    if kind == "call":
        return ("call", e[1], [_simplify(a) for a in e[2]])
    if kind == "sum":
        out, lit, lit_at = [], None, None
        for s, t in e[1]:
            t = _simplify(t)
            if isinstance(t, tuple) and t[0] == "sum":     # a folded inner sum: splice its terms
                for s2, t2 in t[1]:
                    if isinstance(t2, _Lit):
                        lit = _Lit((lit.v if lit else 0) + s * s2 * t2.v, (lit.long if lit else False) or t2.long)
                        lit_at = len(out) if lit_at is None else lit_at
                    else:
                        out.append((s * s2, t2))
                continue
            if isinstance(t, _Lit):
                lit = _Lit((lit.v if lit else 0) + s * t.v, (lit.long if lit else False) or t.long)
                lit_at = len(out) if lit_at is None else lit_at
                continue
            out.append((s, t))
        if lit is not None and (lit.v != 0 or not out):
            out.insert(lit_at, (1, lit))
        if not out:
            return _Lit(0)
        if len(out) == 1 and out[0][0] == 1:
            return out[0][1]
        return ("sum", out)
    if kind == "prod":
        out, lit, lit_at = [], None, None
        for f in e[1]:
            f = _simplify(f)
            if isinstance(f, _Lit):
                lit = _Lit((lit.v if lit else 1) * f.v, (lit.long if lit else False) or f.long)
                lit_at = len(out) if lit_at is None else lit_at
            else:
                out.append(f)
        if lit is not None and lit.v == 0:
            return _Lit(0, lit.long)
        if lit is not None and (lit.v != 1 or not out):
            out.insert(lit_at, lit)
        if len(out) == 1:
            return out[0]
        return ("prod", out)
    if kind in ("div", "mod"):
        a, b = _simplify(e[1]), _simplify(e[2])
        if isinstance(b, _Lit) and b.v == 1:
            return a if kind == "div" else _Lit(0)
        if isinstance(a, _Lit) and a.v == 0:
            return _Lit(0)
        if isinstance(a, _Lit) and isinstance(b, _Lit) and a.v >= 0 and b.v > 0:
            return _Lit(a.v // b.v if kind == "div" else a.v % b.v, a.long or b.long)
        return (kind, a, b)
    raise AssertionError(e)


_LEVEL = {"sum": 1, "prod": 2, "div": 2, "mod": 2}


def _kind(e) -> str:
    return "lit" if isinstance(e, _Lit) else e[0]


def _level(e) -> int:
    if isinstance(e, _Lit):
        return 1 if e.v < 0 else 3
    return _LEVEL.get(e[0], 3)


def _wrap(e, need: int) -> str:
    text = _print(e)
    return f"({text})" if _level(e) < need else text


def _print(e) -> str:
    if isinstance(e, _Lit):
        return f"{e.v}{'L' if e.long else ''}"
    kind = e[0]
    if kind == "name":
        return e[1]
    if kind == "sub":
        return f"{_print(e[1])}[{_print(e[2])}]"
    if kind == "call" and e[1].startswith("_cast_"):
        return f"({e[1][6:].replace('_', ' ').replace('size t', 'size_t')}){_wrap(e[2][0], 3)}"
    if kind == "call":
        return f"{e[1]}({', '.join(_print(a) for a in e[2])})"
    if kind == "sum":
        parts = []
        for i, (s, t) in enumerate(e[1]):
            if isinstance(t, _Lit) and t.v < 0:
                s, t = -s, _Lit(-t.v, t.long)
            text = _wrap(t, 2 if s < 0 else 1) if i else _wrap(t, 2 if s < 0 else 1)
            if i == 0:
                parts.append(f"-{_wrap(t, 3)}" if s < 0 else text)
            else:
                parts.append(f"{'-' if s < 0 else '+'} {text}")
        return " ".join(parts)
    if kind == "prod":     # (r / 5) * 2 keeps its parentheses: C would not need them, a reader does
        return " * ".join(_print(f) if i == 0 and _kind(f) == "lit" else _wrap(f, 3) for i, f in enumerate(e[1]))
    if kind in ("div", "mod"):
        left = _print(e[1]) if _kind(e[1]) == "lit" else _wrap(e[1], 2 if _kind(e[1]) in ("prod", kind) else 3)
        return f"{left} {'/' if kind == 'div' else '%'} {_wrap(e[2], 3)}"
    raise AssertionError(e)
