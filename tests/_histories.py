"""A tiny builder for hand-written histories in checker tests.

Every event takes the next step; ``at(time)`` moves the virtual clock and ``at(step=n)`` jumps
the step counter, so a test can reproduce the exact numbers a message pins.

    h = HistoryBuilder()
    h.setup("u1", "u1.v0")                 # client 0's initial write, steps 0-1
    w = h.at(1).invoke(1, "write", "u1", "u1.v1")
    h.at(2).complete(w)
    h.at(5).read(2, "u1", "u1.v0")         # invoke and complete at once
    history = h.build()
"""

from __future__ import annotations

from pytest_cachecheck.history import Call, Complete, History, Invoke, Probe


class HistoryBuilder:
    def __init__(self) -> None:
        self.events: list = []
        self.next_step = 0
        self.time = 0.0
        self._clients: dict[int, int] = {}

    def at(self, time: float | None = None, *, step: int | None = None) -> "HistoryBuilder":
        if time is not None:
            self.time = float(time)
        if step is not None:
            self.next_step = step
        return self

    def _stamp(self) -> tuple[int, float]:
        step = self.next_step
        self.next_step += 1
        return step, self.time

    # Single events.

    def invoke(self, client: int, kind: str, key: str, value: str | None = None) -> int:
        op = len(self._clients) + 1
        self._clients[op] = client
        step, time = self._stamp()
        self.events.append(Invoke(step, time, client, op, kind, key, value))
        return op

    def complete(self, op: int, status: str = "ok", value: str | None = None, error: str | None = None) -> None:
        step, time = self._stamp()
        self.events.append(Complete(step, time, self._clients[op], op, status, value, error))

    def call(self, client: int, op: int | None, system: str, command: str, result: str = "") -> int:
        step, time = self._stamp()
        self.events.append(Call(step, time, client, f"client-{client}", op, system, command, result))
        return step

    def probe(self, key: str, observed: str | None, source: str | None) -> int:
        step, time = self._stamp()
        self.events.append(Probe(step, time, key, observed, source))
        return step

    # Whole operations, invoked and completed back to back.

    def setup(self, key: str, value: str | None) -> int:
        return self.write(0, key, value)

    def write(self, client: int, key: str, value: str | None) -> int:
        op = self.invoke(client, "write", key, value)
        self.complete(op)
        return op

    def delete(self, client: int, key: str) -> int:
        op = self.invoke(client, "delete", key)
        self.complete(op)
        return op

    def read(self, client: int, key: str, observed: str | None) -> int:
        op = self.invoke(client, "read", key)
        self.complete(op, value=observed)
        return op

    def build(self) -> History:
        return History.of(self.events)
