"""One error family. Every message names where (layer, operator, attribute) and the fix."""
from __future__ import annotations


class CnnccError(Exception):
    """Base of every error cnncc raises on purpose; the CLI turns it into exit code 2."""


class ModelError(CnnccError):
    """The model is malformed: a bad attribute, a shape that cannot work, a cycle."""

    def __init__(self, message: str, *, node: str | None = None, op: str | None = None,
                 attr: str | None = None, fix: str | None = None):
        self.node, self.op, self.attr, self.fix = node, op, attr, fix
        where = []
        if node:
            where.append(f"layer '{node}'")
        if op:
            where.append(f"({op})")
        if attr:
            where.append(f"attribute '{attr}'")
        text = (" ".join(where) + ": " if where else "") + message
        if fix:
            text += f"\n  fix: {fix}"
        super().__init__(text)


class InputError(ModelError):
    """A call was fed something the model cannot take: names the input, the axis, what was
    expected and how to fix it."""

    def __init__(self, message: str, *, input: str | None = None, fix: str | None = None):  # noqa: A002
        self.input = input
        text = (f"input '{input}' " if input else "") + message
        super().__init__(text, fix=fix)


class UnsupportedError(CnnccError):
    """A construct cnncc does not handle (yet); the message lists every offender at once."""


class CompileError(CnnccError):
    """Generated code failed to compile, or a compiled artifact cannot be used."""


class IntegrityError(CnnccError):
    """A saved module's files do not match their recorded hashes."""
