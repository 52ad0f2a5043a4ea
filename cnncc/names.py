"""The one identifier rule: how a name taken from a user's graph is spelled in generated code.

Graph names are whatever the user wrote (``src``, ``int``, ``/layer1/conv1/Conv``, ``名``, ``""``).
They stay as written everywhere a user sees them (summary, inspect, errors, profile tables, the
manifest of a saved module); only their C/CUDA spelling goes through ``ident``:

    ident("conv1")        -> "t_conv1"                 a plain identifier keeps its spelling
    ident("a.b")          -> "t_a_b__1c4f09d2"         anything else: readable part + "__" + hash
    ident("a_b")          -> "t_a_b"                   ... so it can never meet "a.b" or "a-b"
    ident("relu", "k")    -> "k_relu"                  kernels: their own prefix
    weight_ident("conv1", "weight") -> "w_conv1__weight"   weight-blob arrays too

Why no collision is possible:

* every graph-derived identifier starts with a one-letter kind and ``_`` (``t_`` tensors,
  ``w_`` weight-blob arrays, ``k_`` kernels); no template local, keyword or C/CUDA library name
  has that shape (tests/test_identifiers.py checks every word of every template), and the
  templates derive their own globals only as ``kernel_<k_...>``, ``tile_<k_...>``, ...;
* a name spelled only with ``[A-Za-z0-9_]``, with no ``__`` and no ``_`` at either end, keeps
  its spelling, so two such names never meet and their identifiers never contain ``__``; every
  other name carries ``__`` and a hash of its exact text, which no plain name can produce, and
  two different texts differ in the hash (32 bits; lowering still checks that every
  identifier of a program is distinct).

``readable`` is the sanitizer the frontends use for the graph's own node names (ONNX names like
``/layer1/conv1/Conv`` become ``layer1_conv1_Conv``); ``comment`` makes any name safe inside a
``/* */`` or ``//`` comment of generated code.
"""
from __future__ import annotations

import hashlib
import re

_PLAIN = re.compile(r"[A-Za-z0-9_]+\Z")
_OTHER = re.compile(r"[^A-Za-z0-9_]+")

#: the kinds of generated identifiers (the prefix letter of ``ident``)
KINDS = {"t": "a graph tensor", "w": "a weight-blob array", "k": "a kernel"}


def readable(text: str) -> str:
    """``text`` as close to an identifier as readable: runs of other characters become one
    ``_``, repeated ``_`` collapse, no ``_`` at either end; may be empty or start with a digit."""
    s = _OTHER.sub("_", str(text))
    s = re.sub(r"_+", "_", s).strip("_")
    return s


def graph_name(text: str) -> str:
    """A frontend's name for a graph node taken from a foreign name (ONNX value names, torch.fx
    node names): ``readable``, never empty, never leading with a digit ('/layer1/conv1/Conv'
    -> 'layer1_conv1_Conv', '1' -> 't_1'). Only for the user's eye: the C/CUDA spelling of any
    graph name, readable or not, is ``ident``'s."""
    s = readable(text)
    return s if s and not s[0].isdigit() else "t_" + s


def is_plain(text: str) -> bool:
    """True when ``ident`` spells ``text`` unchanged after its prefix."""
    return bool(_PLAIN.match(text)) and "__" not in text and not text.startswith("_") and not text.endswith("_")


def ident(name: str, kind: str = "t") -> str:
    """The C/CUDA identifier of graph name ``name`` (see the module docstring)."""
    if kind not in KINDS:
        raise ValueError(f"identifier kind '{kind}' is not one of {', '.join(KINDS)}")
    name = str(name)
    if is_plain(name):
        return f"{kind}_{name}"
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    base = readable(name)
    return f"{kind}_{base}__{digest}" if base else f"{kind}__{digest}"


def weight_ident(node: str, param: str) -> str:
    """The identifier of weight-blob array ``param`` of layer ``node`` ("conv1", "bias" ->
    ``w_conv1__bias``): the node part spelled as ``ident`` does, the parameter (a name cnncc
    chose, never containing ``__`` once ``readable``) after the last ``__``."""
    return f"w_{ident(node)[2:]}__{readable(param) or 'param'}"


_COMMENT_BAD = re.compile(r"\*/|/\*|\?\?|\\|\"|[^\x20-\x7e]")


def comment(text: str) -> str:
    """``text`` made safe inside a C/CUDA comment: no comment end or start, no backslash or
    trigraph (a line continuation would swallow the next line of a ``//`` comment), no ``"``
    (names also appear in ``#error "..."``), nothing
    outside printable ASCII (non-ASCII shown as ``<U+540D>``)."""
    def fix(m: re.Match) -> str:
        s = m.group(0)
        if s in ("*/", "/*"):
            return s[0] + " " + s[1]
        if s == "??":
            return "? ?"
        if s == "\\":
            return "<bs>"
        if s == '"':
            return "'"
        return "<U+%04X>" % ord(s)
    return _COMMENT_BAD.sub(fix, str(text))
