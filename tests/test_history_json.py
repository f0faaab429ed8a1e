"""A recorded history is data: it round-trips through JSON and re-checks to the same verdicts."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from layers import target
from pytest_cachecheck.strategies.catalogue import CORRECT, KNOWN_BUGS

from pytest_cachecheck import Budget, CachecheckFailure, History, check, explore, hookimpl
from pytest_cachecheck.history import SCHEMA, Call
from pytest_cachecheck.history._calls import (
    Batch,
    Command,
    LockPoint,
    Opaque,
    Raised,
    Rows,
    Sleep,
    Statement,
    decode,
    encode,
)


class _KeepsTheBusiest:
    """A checker that judges nothing and keeps the history with the most calls it was given."""

    def __init__(self) -> None:
        self.history: History | None = None

    @hookimpl
    def cachecheck_check(self, history):
        if self.history is None or len(history.calls) > len(self.history.calls):
            self.history = history
        return None


def _recorded(target_: Any, servers: Any, examples: int = 30) -> History:
    keeper = _KeepsTheBusiest()
    try:
        explore(target_, Budget(examples=examples, seed=4), plugins=[keeper], servers=servers)
    except CachecheckFailure:
        pass
    assert keeper.history is not None
    return keeper.history


def _assert_round_trips(history: History, contract: Any) -> History:
    text = history.to_json()
    assert json.loads(text)["schema"] == SCHEMA
    again = History.from_json(text)
    assert again == history
    assert again.to_json() == text
    assert [call.command for call in again.calls] == [call.command for call in history.calls]
    assert [call.result for call in again.calls] == [call.result for call in history.calls]
    assert check(again, contract) == check(history, contract)
    return again


@pytest.mark.parametrize("reference", [*KNOWN_BUGS, *CORRECT], ids=lambda t: t.name)
def test_every_reference_layers_history_round_trips_and_rechecks_the_same(reference, servers):
    history = _recorded(reference, servers)
    calls = history.calls
    # Recorded as data, not only as text: every point the layer reached, SQL with its parameters.
    kinds = {"redis": (Command, Batch), "sql": Statement, "sleep": Sleep, "lock": LockPoint}
    assert all(isinstance(call.request, kinds[call.system]) for call in calls if call.system in kinds)
    assert any(call.system == "sql" and call.request.params for call in calls)
    _assert_round_trips(history, reference.contract)


class BinaryValues:
    """Caches each value wrapped in bytes that are no text: a NUL, and bytes invalid as UTF-8."""

    WRAP = b"\x00\xff\xfe"

    def __init__(self, r: Any, conn: Any) -> None:
        self.r, self.conn = r, conn

    def read(self, key: str) -> str | None:
        cached = self.r.get(f"user:{key}".encode())
        if cached is not None:
            return cached[len(self.WRAP) :].decode()
        value = self.conn.execute("SELECT name FROM users WHERE id = %s", (key,)).fetchone()[0]
        self.r.set(f"user:{key}".encode(), self.WRAP + value.encode(), ex=30)
        return value

    def write(self, key: str, value: str) -> None:
        self.conn.execute("UPDATE users SET name = %s WHERE id = %s", (value, key))
        self.conn.commit()
        self.r.delete(f"user:{key}")


def test_binary_values_survive_the_round_trip(servers):
    layer = target(BinaryValues, decode_responses=False)
    history = _recorded(layer, servers, examples=20)
    again = _assert_round_trips(history, layer.contract)
    sets = [call for call in again.calls if call.commands and call.commands[0].name == "SET"]
    hits = [call for call in again.calls if isinstance(call.reply, bytes)]
    assert sets and hits
    assert sets[0].keys[0].startswith(b"user:") and sets[0].commands[0].args[0].startswith(BinaryValues.WRAP)
    assert hits[0].reply.startswith(BinaryValues.WRAP)
    assert hits[0].result.isprintable() and "x00" in hits[0].result  # shown escaped, kept raw


def test_every_kind_of_value_comes_back_as_it_was():
    values = [
        None, True, 0, -3, 2.5, math.inf, "", "tab\there", b"\x00\xff", (1, "a"), [1, (2, b"x")],
        {b"k": [1], "s": {"nested": (None,)}}, {1, 2}, frozenset({"a"}), [],
        Raised("ResponseError", "WRONGTYPE"), Rows((("u1", 1),), 1), Rows(None, 3), Opaque("<X>", "x"),
        Command("SET", ("k", b"\x00", "EX", 3), (0,)), Batch((Command("DEL", ("k",), (0,)),), True),
        Statement("UPDATE t SET a = %s", ["v"]), Statement("INSERT", [(1,), (2,)], many=True),
        Sleep(0.5), LockPoint("acquire", "Lock-1"),
    ]
    for value in values:
        text = json.dumps(encode(value))
        again = decode(json.loads(text))
        assert again == value and type(again) is type(value), value
    assert type(decode(json.loads(json.dumps(encode((1, [2]))))) [1]) is list


def test_a_call_is_rebuilt_from_its_data_alone():
    call = Call(
        7, 1.5, 1, "c1", 3, "redis", request=Command("MSET", ("a", "1", "b", "2"), (0, 2)),
        reply=[Raised("ResponseError", "oops"), b"ok"],
    )
    assert call.command == "MSET a 1 b 2" and call.keys == ("a", "b") and call.commands[0].args == ("1", "2")
    assert call.result == "[ResponseError('oops'), b'ok']"
    [row] = json.loads(History.of([call]).to_json())["events"]
    assert "command" not in row and "result" not in row  # text is a rendering, never stored beside the data
    assert History.from_json(History.of([call]).to_json()).calls == [call]


def test_the_first_format_still_reads_and_an_unknown_schema_is_refused():
    legacy = [{"type": "Call", "step": 1, "time": 0.0, "client": 1, "actor": "c1", "op": None,
               "system": "redis", "command": "GET k", "result": "nil"}]
    [call] = History.from_json(json.dumps(legacy)).calls
    assert (call.command, call.result, call.request) == ("GET k", "nil", None)
    with pytest.raises(ValueError, match="schema 'cachecheck-history/99', expected 'cachecheck-history/1'"):
        History.from_json(json.dumps({"schema": "cachecheck-history/99", "events": []}))
