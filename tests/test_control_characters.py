"""Control characters in recorded values are escaped when shown: a NUL byte, an ANSI escape or a
newline a layer stores never reaches the terminal raw, nor splits a line of the trace."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_cachecheck import Budget, CachecheckFailure, Target, explore
from pytest_cachecheck.engine._scheduler import render_result
from pytest_cachecheck.history._printable import printable
from pytest_cachecheck.history._calls import render_arg, render_command
from pytest_cachecheck.history._calls import render_statement

CONTROL = "\x00\x1b[31m\n"


class StoresControlCharacters:
    """Cache-aside whose writes append NUL, ESC[31m and a newline, in SQL and in Redis alike:
    its reads return values no write produced (a phantom-read finding, with a story to print)."""

    def __init__(self, redis_client: Any, connection: Any) -> None:
        self.r = redis_client
        self.conn = connection

    def get(self, key: str) -> Any:
        cached = self.r.get(f"user:{key}")
        if cached is not None:
            return cached
        row = self.conn.execute("SELECT name FROM users WHERE id = %s", (key,)).fetchone()
        return row and row[0]

    def update(self, key: str, value: str) -> None:
        self.conn.execute("UPDATE users SET name = %s WHERE id = %s", (value + CONTROL, key))
        self.conn.commit()
        self.r.set(f"user:{key}", value + CONTROL)


TARGET = Target(
    name="control-characters", build=StoresControlCharacters, read="get", write=lambda layer, key, value: layer.update(key, value)
)


def test_values_with_control_characters_are_shown_escaped_in_the_story_and_trace():
    with pytest.raises(CachecheckFailure) as info:
        explore(TARGET, Budget(examples=100, seed=1))
    story = str(info.value)
    assert "[phantom-read]" in story
    raw = sorted({repr(ch) for ch in story if not ch.isprintable() and ch != "\n"})
    assert raw == [], raw
    lines = story.splitlines()
    # Redis: the command and the value read back, quoted and escaped.
    assert any(line.endswith(f"SET user:u1 'u1.v1\\x00\\x1b[31m\\n' -> True") for line in lines), story
    # SQL: the parameter as a PostgreSQL escape string.
    assert any("UPDATE users SET name = E'u1.v1\\x00\\x1b[31m\\n' WHERE id = 'u1'" in line for line in lines), story
    # The read's result and the finding: escaped too, on their own lines.
    assert any("returns u1.v1\\x00\\x1b[31m\\n" in line for line in lines), story
    assert any(line.startswith("[phantom-read]") and "\\x1b[31m" in line for line in lines), story


def test_the_renderers_escape_what_is_not_printable():
    assert render_arg("plain") == "plain"
    assert render_arg("a\x00b") == "'a\\x00b'"
    assert render_arg(b"\x1b[31m") == "'\\x1b[31m'"
    assert render_command(["SET", "k", "v\n"]) == "SET k 'v\\n'"
    assert render_statement("SELECT %s", ("it's",)) == "SELECT 'it''s'"
    assert render_statement("SELECT %s", ("a\\b\x00'",)) == "SELECT E'a\\\\b\\x00'''"
    assert render_statement("SELECT 'x\x1by'", None) == "SELECT 'x\\x1by'"
    assert render_result("\x00") == "'\\x00'"

    class Shouts:
        def __repr__(self) -> str:
            return "\x1b[1mLOUD\x1b[0m"

    assert render_result(Shouts()) == "\\x1b[1mLOUD\\x1b[0m"
    assert printable("tab\there\u2028") == "tab\\there\\u2028"
    assert printable("naïve ✓") == "naïve ✓"
