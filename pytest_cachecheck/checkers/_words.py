"""How the checkers name clients, values and writes in their stories.

One place, so that every message reads the same: client 0 is "setup", a missing value is
"nothing", a setup write is "the initial value".
"""

from __future__ import annotations

from typing import Sequence

from ..history import SETUP_CLIENT, Operation

__all__ = ["clip", "got", "got_value", "show", "what", "who", "write_of"]


def who(client: int) -> str:
    """``client 3``, or ``setup`` for the client that wrote the initial values."""
    return "setup" if client == SETUP_CLIENT else f"client {client}"


def show(value: str | None) -> str:
    """A value as it appears in a story: bare (``u1.v3``), or ``nothing`` for an absent key."""
    return "nothing" if value is None else value


def got(value: str | None, writers: Sequence[Operation]) -> str:
    """What a read got: ``u1.v3``, ``the initial value u1.v0`` or ``nothing``."""
    return got_value(value, initial=bool(writers) and all(w.client == SETUP_CLIENT for w in writers))


def got_value(value: str | None, *, initial: bool) -> str:
    """:func:`got`, told whether every write the read may have seen was the setup client's."""
    if value is not None and initial:
        return f"the initial value {value}"
    return show(value)


def what(write: Operation) -> str:
    """``write of u1.v1``, or ``delete of u1`` for a write of ``None``."""
    if write.kind == "delete" or write.written is None:
        return f"delete of {write.key}"
    return f"write of {write.written}"


def write_of(write: Operation) -> str:
    """``client 1's write of u1.v1``, ``client 1's delete of u1``, ``setup's write of u1.v0``."""
    return f"{who(write.client)}'s {what(write)}"


def clip(text: str, width: int = 80) -> str:
    """``text`` cut to ``width`` characters, marking the cut."""
    return text if len(text) <= width else text[: width - 3] + "..."
