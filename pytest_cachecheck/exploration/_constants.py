"""The same seed explores the same examples, whatever else the process imported.

Hypothesis (6.131 and later) mixes integer and string constants found in the project's own
modules into about one draw in twenty.  Which modules those are depends on what the process has
imported by then: the same exploration with the same seed would draw other decisions alone than
inside a whole test suite, or after another test imported one more module, and a failure found
in CI would not replay on a laptop.  While an exploration runs, Hypothesis sees no local
constants (its global ones stay), and the cache of constants it allowed per draw is emptied on
the way in and out, so nothing of another test's constants leaks into ours or ours into theirs.

Hypothesis offers no setting for this: the hook is internal.  Where it is missing (an older or
newer Hypothesis), nothing is patched and exploration works as before, only less reproducibly.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator


@contextmanager
def no_local_constants() -> Iterator[None]:
    """Hypothesis draws no constant taken from the user's modules inside this block."""
    try:
        from hypothesis.internal.conjecture import providers
        from hypothesis.internal.constants_ast import Constants
    except ImportError:  # pragma: no cover - another Hypothesis layout: nothing to pin
        yield
        return
    real = getattr(providers, "_get_local_constants", None)
    cache: Any = getattr(providers, "CONSTANTS_CACHE", None)
    if real is None or cache is None or not hasattr(cache, "cache"):
        yield
        return
    none = Constants()
    providers._get_local_constants = lambda: none
    cache.cache.clear()
    try:
        yield
    finally:
        providers._get_local_constants = real
        cache.cache.clear()
