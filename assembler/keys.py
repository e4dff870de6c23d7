"""Dotted names as small typed values that are still strings.

Module keys (`student.c2.0`, `rot.0`, `pre.c2.0`) and binding references (`teacher.c3`,
`src.cnn.c2`) are read by the compiler, the trainer and checkpoints as plain strings (dict
keys, JSON), so these types subclass `str`: every place that used a string keeps working,
and the places that take a name apart use the methods here instead of slicing by hand.
Wrapping a plain string (`ModuleKey(s)`) is cheap and always allowed.
"""

from __future__ import annotations


class Key(str):
    """A dotted path: `a.b.c`."""

    __slots__ = ()

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(self.split("."))

    @property
    def head(self) -> str:
        """The first part: `student` of `student.c2.0`."""
        return self.partition(".")[0]

    @property
    def rest(self) -> str:
        """Everything after the first part: `c2.0` of `student.c2.0` ("" for one part)."""
        return self.partition(".")[2]

    def child(self, *parts: str) -> "Key":
        """This path extended by `parts`."""
        return type(self)(".".join((self, *parts)) if self else ".".join(parts))

    def below(self, prefix: str) -> str | None:
        """The path under `prefix` (`c2.0` for `student.c2.0` below `student`), "" for the
        prefix itself, None when this path is not under it."""
        if self == prefix:
            return ""
        return self[len(prefix) + 1:] if self.startswith(prefix + ".") else None

    def replace_prefix(self, old: str, new: str) -> "Key":
        """This path with the leading `old` (a whole number of parts) replaced by `new`."""
        under = self.below(old)
        if under is None:
            return self
        return type(self)(new if not under else (f"{new}.{under}" if new else under))


class ModuleKey(Key):
    """The key of a module: its owner (a network, a shared module or an import alias) and its
    path inside it, as in `Checked.modules`."""

    __slots__ = ()

    @property
    def owner(self) -> str:
        return self.head

    def local(self, network: str) -> str:
        """Where the module sits in `network`'s GraphModule: a module the network owns drops
        the network's name; any other keeps its full key."""
        under = self.below(network)
        return under if under else str(self)

    def block(self) -> "ModuleKey":
        """The key without its trailing op indices: `pre.c2` of `pre.c2.0` (what a picture
        calls the block a module comes from)."""
        parts = self.parts
        while len(parts) > 1 and parts[-1].isdigit():
            parts = parts[:-1]
        return ModuleKey(".".join(parts))


class BindingRef(Key):
    """A binding named from outside its network, as match endpoints are written: `teacher.c3`
    (a network of this file), `src.c2` or `src.cnn.c2` (an import)."""

    __slots__ = ()

    @property
    def network(self) -> str:
        """The network or import alias the reference starts with."""
        return self.head

    @property
    def binding(self) -> str:
        """The rest: the binding (with the imported network's name, for `src.cnn.c2`)."""
        return self.rest


class GatePathName(Key):
    """A gate path as `prune` names it: `c3.in2` is path 2 of the gate of binding `c3`; a
    name without `.in` is a whole binding."""

    __slots__ = ()

    @property
    def binding(self) -> str:
        return self.partition(".in")[0]

    @property
    def index(self) -> int | None:
        """The path's index, or None for a whole binding (or a malformed index)."""
        _, dot, rest = self.partition(".in")
        return int(rest) if dot and rest.isdigit() else None

    @property
    def is_path(self) -> bool:
        return ".in" in self
