"""A property of our own: "single source query per read".

This is how a team adds a property the built-in checkers do not cover.  Any ``conftest.py`` (or
plugin) that defines a ``cachecheck_check`` function marked with ``pytest_cachecheck.hookimpl``
is called once per explored example, with the example's ``History`` and the target's
``Contract``, and returns a ``Verdict``.  Its verdict then shows in the ``cachecheck`` summary
next to the built-in ones, e.g. ``single-source-query ok``.

**Definition.**  A read should query the source at most once: a read operation whose SQL calls
include more than one ``SELECT`` hit the database several times for one answer, which is what a
cache exists to avoid (a retry loop around the database, a lock wait that falls back to a second
fetch, a layer that reads twice to "double-check").  Each such read is one finding, e.g.
``client 1's read of u1 queried the source 2 times (steps 7, 12)``.

**Reported, not enforced.**  The findings are figures (``violates=False``): the verdict stays
``ok`` and the exploration's outcome is decided by the built-in properties alone.  A layer may
legitimately query twice on a rare path (``UserProfileCache`` fetches directly after its lock
wait times out), and the example tests must keep their outcomes (the seed's cache-aside and
``UserProfileCache`` fail on their race, the leased variant passes).  A team that wants it
enforced sets ``ENFORCE = True``: every read that queried twice then fails the exploration.
"""

from pytest_cachecheck import Finding, Verdict, hookimpl

PROPERTY = "single-source-query"
ENFORCE = False


def _is_source_query(call):
    return call.system == "sql" and call.command.lstrip().upper().startswith("SELECT")


@hookimpl
def cachecheck_check(history, contract):
    """One finding per read that sent more than one SELECT to the source."""
    findings = []
    reads = [op for op in history.operations() if op.kind == "read"]
    for op in reads:
        steps = [call.step for call in history.calls_of(op.op) if _is_source_query(call)]
        if len(steps) > 1:
            findings.append(
                Finding(
                    property=PROPERTY,
                    message=(
                        f"client {op.client}'s read of {op.key} queried the source {len(steps)} times "
                        f"(steps {', '.join(map(str, steps))})"
                    ),
                    key=op.key,
                    steps=tuple(steps),
                    figures={"queries": len(steps)},
                    violates=ENFORCE,
                )
            )
    return Verdict.of(PROPERTY, findings, {"reads": len(reads), "reads_querying_twice": len(findings)})
