"""``-W error``: a layer's warning becomes an error, but never replaces a failure's story.

The seed's cache-aside calls ``setex``, which redis-py deprecates: under ``-W error`` the
re-issued DeprecationWarning used to escape from the harness and the story, the replay line and
the summary were lost.
"""

import warnings

import pytest

from layers import Direct, target

from pytest_cachecheck import Budget, CachecheckFailure, explore
from pytest_cachecheck.strategies.catalogue import CORRECT, KNOWN_BUGS


def _target(name):
    return next(target for target in (*KNOWN_BUGS, *CORRECT) if target.name == name)


def test_a_warning_turned_error_does_not_replace_the_story():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(CachecheckFailure) as failure:
            explore(_target("seed-cache-aside"), Budget(examples=300, seed=3))
    message = str(failure.value)
    assert "[divergence]" in message or "[stale-read]" in message
    assert "state.do(step=" in message


class _WarnsDirect(Direct):
    """Correct (no cache at all), but every read warns."""

    def read(self, key):
        warnings.warn("this layer is deprecated", DeprecationWarning, stacklevel=1)
        return super().read(key)


def test_a_passing_exploration_still_raises_the_layers_warning_under_error():
    """With no failure to tell, ``-W error`` is honoured: the layer's warning is the error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DeprecationWarning, match="this layer is deprecated"):
            explore(target(_WarnsDirect), Budget(examples=20, seed=0))


def test_without_error_the_warning_is_reissued_once():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        explore(target(_WarnsDirect), Budget(examples=20, seed=0))
    assert [str(w.message) for w in caught if w.category is DeprecationWarning] == ["this layer is deprecated"]
