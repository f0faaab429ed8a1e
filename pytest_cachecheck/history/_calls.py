"""What a scheduling point did, as data, and the one-line text it is shown as.

A :class:`~pytest_cachecheck.history.Call` keeps its *request* (a Redis :class:`Command`, a
pipeline or MULTI/EXEC :class:`Batch`, a SQL :class:`Statement` or commit, a :class:`Sleep`, a
:class:`LockPoint`) and its outcome (the reply as data, or the :class:`Raised` error), so that a
property reads which command touched which key without parsing text.  The text a trace shows is
rendered from that data by the functions here, the only renderers of a call.

Invariants: every request and reply type is a frozen dataclass whose fields are plain data
(str, bytes, int, float, bool, None, tuples, lists, dicts, sets, and these types), so a history
can be written as JSON and read back equal (:func:`encode` / :func:`decode`); rendered text
holds no control character (``_printable``).  This module imports nothing of the history, so
the history can import it.
"""

from __future__ import annotations

import base64
import math
import re
from dataclasses import dataclass, fields
from typing import Any, Iterable, Union

from ._printable import printable

__all__ = [
    "Batch",
    "Command",
    "LockPoint",
    "Opaque",
    "Raised",
    "Rows",
    "Sleep",
    "Statement",
    "outcome_text",
    "render_arg",
    "render_command",
    "render_result",
    "render_statement",
    "to_data",
]


# -- rendering --------------------------------------------------------------------------------


def render_arg(arg: Any) -> str:
    """One argument as shown: bare if plain, else quoted with ``repr`` (control characters escaped)."""
    if isinstance(arg, (bytes, bytearray, memoryview)):
        arg = bytes(arg).decode("utf-8", "backslashreplace")
    if isinstance(arg, str):
        if arg and all(ch.isprintable() and not ch.isspace() and ch not in "'\"\\" for ch in arg):
            return arg
        return repr(arg)
    text = str(arg)
    return text if text.isprintable() else repr(text)


def render_command(args: Iterable[Any]) -> str:
    """``SETEX user:u1 3600 '{"name": "u1.v0"}'``: the command name first, values quoted.

    A name redis-py gives as one string (``"MEMORY USAGE"``) is shown as the words Redis gets.
    """
    args = list(args)
    if args and isinstance(args[0], (str, bytes)):
        name = render_arg(args[0]).strip("'\"") if " " in str(args[0]) else render_arg(args[0])
        return " ".join([name, *(render_arg(arg) for arg in args[1:])])
    return " ".join(render_arg(arg) for arg in args)


PLACEHOLDER = re.compile(r"%\((\w+)\)s|%s|%%")
"""psycopg's placeholders: ``%s``, ``%(name)s``, and ``%%`` for a literal percent sign."""


def _literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "backslashreplace")
    text = str(value)
    if text.isprintable():
        return "'" + text.replace("'", "''") + "'"
    # Control characters are never shown raw: PostgreSQL's escape-string form, E'a\x00b\n'.
    return "E'" + printable(text.replace("\\", "\\\\")).replace("'", "''") + "'"


def render_statement(sql: str, params: Any) -> str:
    """The statement with its parameters inlined, on one line, for the history."""
    flat = printable(" ".join(sql.split()))
    if params is None:
        return flat
    if isinstance(params, dict):
        return PLACEHOLDER.sub(lambda m: "%" if m.group(0) == "%%" else _literal(params.get(m.group(1))), flat)
    values = iter(params)
    return PLACEHOLDER.sub(lambda m: "%" if m.group(0) == "%%" else _literal(next(values, None)), flat)


def render_result(value: Any, limit: int = 160) -> str:
    """A short, deterministic rendering of a command's result for the history."""
    if value is None:
        return "nil"
    if isinstance(value, bytes):
        value = value.decode("utf-8", "backslashreplace")
    text = printable(repr(value))  # a repr can still hold control characters (a custom __repr__)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- requests ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """One Redis command as the layer sent it, before any key prefix the harness adds.

    ``name`` is the command, upper-case, one word (``SET``; ``XGROUP`` with ``CREATE`` as its
    first argument); ``argv`` every argument after it, in order, as sent (str, bytes, int,
    float); ``key_positions`` the indices in ``argv`` that are keys, from the server's
    ``COMMAND`` table (and ``numkeys`` for scripts).  :attr:`keys` and :attr:`args` split
    ``argv`` along them.
    """

    name: str
    argv: tuple = ()
    key_positions: tuple = ()

    @property
    def keys(self) -> tuple:
        """The keys the command names, as the layer named them (str or bytes), in order."""
        return tuple(self.argv[i] for i in self.key_positions)

    @property
    def args(self) -> tuple:
        """Every argument that is not a key, in order."""
        keys = set(self.key_positions)
        return tuple(arg for i, arg in enumerate(self.argv) if i not in keys)

    def text(self) -> str:
        return render_command((self.name, *self.argv))


@dataclass(frozen=True)
class Batch:
    """A pipeline (``transaction=False``) or MULTI/EXEC block: one point, several commands."""

    commands: tuple = ()
    transaction: bool = True

    def text(self) -> str:
        shown = [command.text() for command in self.commands]
        if self.transaction:
            return "; ".join(["MULTI", *shown, "EXEC"])
        return "PIPELINE " + "; ".join(shown)


@dataclass(frozen=True)
class Statement:
    """A SQL statement and its parameters (``None``, a tuple or list, or a dict), or ``COMMIT``/
    ``ROLLBACK`` (no parameters).  For ``executemany`` (``many``), ``params`` holds every set."""

    sql: str
    params: Any = None
    many: bool = False

    def text(self) -> str:
        if self.many:
            first = self.params[0] if self.params else self.params
            return render_statement(self.sql, first) + f" (x{len(self.params)})"
        return render_statement(self.sql, self.params)


@dataclass(frozen=True)
class Sleep:
    """A cooperative ``time.sleep`` of ``seconds`` virtual seconds."""

    seconds: float

    def text(self) -> str:
        return f"sleep({self.seconds:g})"


@dataclass(frozen=True)
class LockPoint:
    """A point of a cooperative primitive: ``action`` (``acquire``, ``wait``, ``join``) on
    ``lock``, the primitive's label in this run (``Lock-1``, ``Condition-2``, a thread's name).
    Releases never block, so they are no point and not recorded."""

    action: str
    lock: str

    def text(self) -> str:
        return f"{self.action} {self.lock}"


Request = Union[Command, Batch, Statement, Sleep, LockPoint]


# -- outcomes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Raised:
    """An error raised by a call (or one reply of a pipeline): its type's name and message."""

    type: str
    message: str

    def __repr__(self) -> str:  # as the exception's own repr reads
        return f"{self.type}({self.message!r})"

    def text(self) -> str:
        return f"raised {self.type}: {self.message}"


@dataclass(frozen=True)
class Rows:
    """What a SQL statement returned: its ``rows`` (``None`` for a statement without a result
    set) and ``rowcount``."""

    rows: tuple | None
    rowcount: int

    def __repr__(self) -> str:
        if self.rows is not None:
            return repr(list(self.rows))
        return f"{self.rowcount} row{'s' if self.rowcount != 1 else ''}"


@dataclass(frozen=True)
class Opaque:
    """A reply value of a type the history does not know, kept as its ``repr`` and ``str``."""

    repr: str
    str: str

    def __repr__(self) -> str:
        return self.repr

    def __str__(self) -> str:
        return self.str


_DATA = (Command, Batch, Statement, Sleep, LockPoint, Raised, Rows, Opaque)
_BY_NAME = {cls.__name__: cls for cls in _DATA}


def to_data(value: Any) -> Any:
    """``value`` as plain data: containers copied, exceptions as :class:`Raised`, bytearrays as
    bytes, any other unknown object as :class:`Opaque`."""
    kind = type(value)
    if value is None or kind in (str, bytes, int, float, bool) or kind in _DATA:
        return value
    if kind is list:
        return [to_data(item) for item in value]
    if kind is tuple:
        return tuple(to_data(item) for item in value)
    if isinstance(value, BaseException):
        return Raised(kind.__name__, str(value))
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, dict):
        return {to_data(key): to_data(item) for key, item in value.items()}
    if isinstance(value, (set, frozenset)):
        return (frozenset if isinstance(value, frozenset) else set)(to_data(item) for item in value)
    if isinstance(value, list):
        return [to_data(item) for item in value]
    if isinstance(value, tuple):
        return tuple(to_data(item) for item in value)
    if isinstance(value, bool):
        return bool(value)
    for plain in (str, bytes, int, float):
        if isinstance(value, plain):
            return plain(value)
    return Opaque(repr(value), str(value))


def outcome_text(reply: Any, error: Raised | None, blocked: str | None) -> str:
    """How a call's outcome is shown: ``raised T: m``, ``blocked: why``, or the reply."""
    if blocked is not None:
        return f"blocked: {blocked}" if blocked else "blocked"
    if error is not None:
        return error.text()
    return render_result(reply)


# -- JSON -------------------------------------------------------------------------------------


def encode(value: Any) -> Any:
    """``value`` (plain data, see :func:`to_data`) as JSON-ready data; :func:`decode` inverts it.

    JSON has no bytes, tuples, sets, non-string keys or infinities: they are written as
    one-key objects (``{"$bytes": base64}``, ``{"$tuple": [...]}``, ``{"$dict": [[k, v], ...]}``,
    ``{"$float": "inf"}``), and so are this module's types (``{"$Command": {...}}``).
    """
    kind = type(value)
    if value is None or kind in (str, bool, int):
        return value
    if kind is float:
        return value if math.isfinite(value) else {"$float": repr(value)}
    if kind is bytes:
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    if kind is list:
        return [encode(item) for item in value]
    if kind is tuple:
        return {"$tuple": [encode(item) for item in value]}
    if kind is dict:
        return {"$dict": [[encode(key), encode(item)] for key, item in value.items()]}
    if kind in (set, frozenset):
        return {f"${kind.__name__}": [encode(item) for item in value]}
    if kind in _DATA:
        return {f"${kind.__name__}": {f.name: encode(getattr(value, f.name)) for f in fields(value)}}
    raise TypeError(f"cannot write {value!r} ({kind.__name__}) into a history's JSON")


def decode(data: Any) -> Any:
    """The value :func:`encode` wrote as ``data``."""
    if isinstance(data, list):
        return [decode(item) for item in data]
    if not isinstance(data, dict):
        return data
    if len(data) != 1:
        raise ValueError(f"not a value of a cachecheck history: {data!r}")
    [(tag, body)] = data.items()
    if tag == "$bytes":
        return base64.b64decode(body)
    if tag == "$tuple":
        return tuple(decode(item) for item in body)
    if tag == "$dict":
        return {decode(key): decode(item) for key, item in body}
    if tag == "$set":
        return {decode(item) for item in body}
    if tag == "$frozenset":
        return frozenset(decode(item) for item in body)
    if tag == "$float":
        return float(body)
    cls = _BY_NAME.get(tag[1:]) if tag.startswith("$") else None
    if cls is None:
        raise ValueError(f"unknown value type {tag!r} in a cachecheck history")
    return cls(**{name: decode(item) for name, item in body.items()})
