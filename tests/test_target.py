"""Describing a layer: bad descriptions are rejected up front with the fix in the message."""

import pytest

import pytest_cachecheck
from pytest_cachecheck import Budget, Contract, Source, Target, TargetError, explore


def layer(redis, conn):
    return object()


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(name=""), "Target.name='' must be a non-empty identifier"),
        (dict(name="has space"), "must be a non-empty identifier"),
        (dict(build=42), "build must be callable as build(redis, connection)"),
        (dict(read=None, write=None), "needs at least one of read= or write="),
        (dict(write=3), "write must be a method name or a callable"),
        (dict(keys=()), "keys=() must be distinct, non-empty strings"),
        (dict(keys=("a", "a")), "must be distinct"),
        (dict(keys=("a b",)), "must be distinct, non-empty strings of letters"),
        (dict(clients=0), "clients=0 must be an integer from 1 to 6"),
        (dict(clients=7), "clients=7 must be an integer from 1 to 6"),
        (dict(contract="strict"), "contract must be a Contract, e.g. Contract.bounded(60)"),
    ],
)
def test_bad_targets_are_rejected_with_the_fix(fields, message):
    with pytest.raises(TargetError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Target(**{"name": "t", "build": layer, **fields})


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(insert="INSERT INTO users VALUES (%s)"), "must take exactly two %s placeholders"),
        (dict(select="SELECT name FROM users"), "must take exactly one %s placeholder"),
        (dict(schema=[]), "Source.schema is empty"),
    ],
)
def test_bad_sources_are_rejected(fields, message):
    with pytest.raises(TargetError, match=message):
        Source(**fields)


def test_contracts_validate_and_describe_themselves():
    assert Contract().is_strict and Contract.strict().describe().startswith("strict")
    assert Contract.bounded(300).describe() == "bounded staleness of 300 s"
    assert not Contract.bounded(300).session_guarantees
    with pytest.raises(ValueError, match="max_staleness=-1.0 must be >= 0"):
        Contract(max_staleness=-1)
    with pytest.raises(ValueError, match="timeout=0.0 must be a positive, finite"):
        Contract(timeout=0)


def test_a_method_name_that_does_not_exist_is_reported_as_an_error_finding():
    class Layer:
        def __init__(self, redis, conn):
            pass

    failure = None
    try:
        explore(Target(name="typo", build=Layer, read="gett"), Budget(examples=5))
    except AssertionError as error:
        failure = str(error)
    assert failure is not None and "Layer has no such method" in failure and "read='gett'" in failure


def test_a_build_that_raises_names_the_target_and_the_fix():
    def broken(redis, conn):
        raise ValueError("no config")

    with pytest.raises(Exception, match=r"Target\(broken\)\.build raised ValueError\('no config'\): fix the target's build= callable"):
        explore(Target(name="broken", build=broken, read="get"), Budget(examples=5))


def test_the_public_surface_is_small_and_deliberate():
    assert sorted(pytest_cachecheck.__all__) == [
        "Budget", "CachecheckFailure", "Call", "Complete", "Contract", "ENTRY", "EnvironmentFailure", "Finding",
        "History", "Invoke", "KeyRoles", "LOCK", "OTHER", "Operation", "Probe", "QUEUE", "Report", "RunConfig",
        "Servers", "Source", "Target", "TargetError", "Verdict", "check", "explore", "hookimpl", "key_roles",
    ]
    for name in set(pytest_cachecheck.__all__) - {"hookimpl", "ENTRY", "LOCK", "OTHER", "QUEUE"}:  # role names: str  # hookimpl is pluggy's marker
        assert getattr(pytest_cachecheck, name).__module__.startswith("pytest_cachecheck")
    assert pytest_cachecheck.hookimpl.project_name == "cachecheck"
