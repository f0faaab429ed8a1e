"""Showing recorded values safely: control characters are escaped, never written raw.

A value a layer stores or reads (a SQL parameter, a Redis value, an exception's message) may hold
a NUL byte, an ANSI escape or a newline.  Written raw, it would garble the terminal, recolour it,
or split one line of a trace into two.  Everything the harness prints passes through here.

Invariant: ``printable(text)`` holds no character for which ``str.isprintable()`` is false (so
no control character, no line break); printable text is returned unchanged.
"""

from __future__ import annotations

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """``text`` with every non-printable character written as a Python-style escape (``\\x1b``)."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in text)


def _escape(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
