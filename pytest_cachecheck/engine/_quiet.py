"""Keep a layer's chatter out of the user's test output, without losing it.

An exploration runs the layer thousands of times: its log lines and warnings would drown the
one story that matters.  While exploring, log records made in simulated tasks are counted and
dropped before any handler sees them, and warnings are recorded, then re-issued once each
(same category, message and place), so ``-W error`` and pytest's warning summary still work;
a warning turned into an error never replaces a failure already being reported.
"""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from typing import Iterator

TASK_THREAD_PREFIX = "cachecheck-"


class _DropTaskRecords(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.threadName.startswith(TASK_THREAD_PREFIX):
            self.dropped += 1
            return False
        return True


class Chatter:
    """What the layer said while it was explored."""

    def __init__(self) -> None:
        self.log_records = 0


@contextmanager
def quiet_layer(chatter: Chatter) -> Iterator[None]:
    dropper = _DropTaskRecords()
    handlers = [*logging.getLogger().handlers, logging.lastResort]
    for handler in handlers:
        if handler is not None:
            handler.addFilter(dropper)
    caught: list[warnings.WarningMessage] = []
    failing = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    except BaseException:
        failing = True
        raise
    finally:
        for handler in handlers:
            if handler is not None:
                handler.removeFilter(dropper)
        chatter.log_records = dropper.dropped
        _reissue_once(caught, failing=failing)


def _reissue_once(caught: list[warnings.WarningMessage], *, failing: bool) -> None:
    """Re-issue each distinct warning once, at the layer's own file and line.

    Under ``-W error`` a re-issued warning raises.  When the exploration is already failing, that
    error would replace the failure (its story, its replay line): the failure wins, and the
    warnings left are still re-issued to whatever filters do not raise.
    """
    seen = set()
    for item in caught:
        where = (item.category, str(item.message), item.filename, item.lineno)
        if where not in seen:
            seen.add(where)
            try:
                warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)
            except Warning:
                if not failing:
                    raise
