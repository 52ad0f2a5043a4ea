"""The C kernels' scratch memory: planned with the arena, never allocated during a call.

A kernel template names the scratch its loops need through templates/c/scratch.c.j2: ``share``
for pieces the whole call uses (one input item copied channels-last), ``alloc``/``carve`` for
pieces every OpenMP thread needs its own copy of. While the kernel renders, its
:class:`ScratchRequest` records each piece's size and gives the template the piece's place in the
call's workspace. The renderer (codegen/c.py) collects the requests into ``Program.workspace``
(codegen/spec.py ``Workspace``); the runtime sizes every call's arena with them for the thread
count it runs with (runtime/cpu.py ``CallContext``), so a forward pass allocates nothing, and
concurrent calls, each with its own arena, never share scratch.

Workspace layout (every kernel starts at the same place: kernels run one after the other):
``[shared pieces][slot of thread 0][slot of thread 1]...``, every piece rounded up to 16 floats
(a 64-byte line) by ``cnncc_round16`` in C and ``spec.round16`` here.
"""
from __future__ import annotations

import sympy

from cnncc.errors import CompileError
from cnncc.codegen.spec import Workspace, round16

_N = sympy.Symbol("N")


def linear(floats, what: str = "scratch piece") -> tuple[int, int]:
    """A piece's size -- an int, or a C expression linear in the batch such as ``"64 * N"`` -- as
    ``(a, b)`` with size ``a * N + b`` floats."""
    if isinstance(floats, int):
        return 0, floats
    e = sympy.expand(sympy.sympify(str(floats), locals={"N": _N}))
    a, b = e.coeff(_N, 1), e.coeff(_N, 0)
    if not (a.is_Integer and b.is_Integer) or sympy.expand(e - a * _N - b) != 0:
        raise CompileError(f"{what}: size '{floats}' is not an integer a * N + b")
    return int(a), int(b)


def _c_size(floats) -> str:
    """The C text of a piece's rounded size (how scratch.c.j2 spells it too)."""
    return f"cnncc_round16({floats})"


class ScratchRequest:
    """What one kernel asks for while its template renders (the ``workspace`` of the template's
    context); :meth:`record` is the ``Workspace`` the Program keeps."""

    def __init__(self, kernel: str):
        self.kernel = kernel
        self.shared: list[tuple[int, int]] = []
        self.per_thread: list[tuple[int, int]] = []
        self._shared_text: list[str] = []     # the rounded sizes as C text (literal when constant)

    def share(self, pieces) -> list[tuple[str, str, str]]:
        """Record call-wide pieces ``[(var, floats, what)]``; returns ``[(var, offset, what)]``, the
        offset in floats from the workspace's start as C text."""
        if self.per_thread:
            raise CompileError(f"kernel '{self.kernel}': shared scratch must be asked for before the per-thread slots")
        out = []
        for var, floats, what in pieces:
            out.append((var, self._offset(), what))
            a, b = linear(floats, f"kernel '{self.kernel}' scratch '{var}'")
            self.shared.append((a, b))
            self._shared_text.append(str(round16(b)) if a == 0 else _c_size(floats))
        return out

    def slots(self, kernel: str, pieces) -> str:
        """Record one thread's pieces ``[(var, floats, what)]``; returns where thread 0's slot
        starts (floats from the workspace's start, C text). Asked once per kernel."""
        if kernel != self.kernel:
            raise CompileError(f"kernel '{self.kernel}' rendered scratch for kernel '{kernel}'")
        if self.per_thread:
            raise CompileError(f"kernel '{self.kernel}' asks for per-thread scratch twice; ask once, for every piece")
        self.per_thread = [linear(floats, f"kernel '{self.kernel}' scratch '{var}'") for var, floats, _ in pieces]
        return self._offset()

    def _offset(self) -> str:
        const = sum(int(t) for t in self._shared_text if t.isdigit())
        terms = [t for t in self._shared_text if not t.isdigit()] + ([str(const)] if const else [])
        return " + ".join(terms) or "0"

    def record(self, rows: int | None = None) -> Workspace | None:
        """The kernel's Workspace, None when it asked for nothing. ``rows``: a static kernel's row
        count (KernelSpec.batch), the N its sizes are computed with whatever the call's batch."""
        if not (self.shared or self.per_thread):
            return None

        def fixed(pieces):
            return tuple(pieces if rows is None else [(0, a * rows + b) for a, b in pieces])
        return Workspace(self.kernel, fixed(self.shared), fixed(self.per_thread))
