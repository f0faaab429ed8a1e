"""A property of our own, "single source query per read": how a team adds a property.

Any ``conftest.py`` (or plugin) that defines ``cachecheck_check``, marked with
``pytest_cachecheck.hookimpl``, is called once per explored example with the example's
``History`` and the target's ``Contract``.  It returns a ``Verdict``, which is judged with the
built-in ones: it shows in the ``cachecheck`` summary (``single-source-query ok``), and a
violating finding fails the exploration, is shrunk and told like any other.

**Definition.**  A read queries the source of truth at most once: among the SQL calls made on
behalf of one read operation, at most one is a ``SELECT``.  Each read that queried more than
once is a finding, e.g. ``client 1's read of u1 queried the source 2 times (steps 7, 12)``.
A cache exists to spare the database; a read that fetches twice (a retry loop, a
"double-check" after taking a lock) costs more than no cache at all under a stampede.

**Enforced** (``violates=True``): none of the example layers queries twice, so their outcomes
do not change (the seed's cache-aside and ``UserProfileCache`` fail on their race, the leased
variant passes).  ``UserProfileCache``'s fallback after its lock wait times out is *instead*
of the locked fetch, not in addition to it: that path is explored (it is what the layer's
"logged records" in the summary are) and still queries once.  A team whose layer may legitimately
query twice on a rare path would pass ``violates=False``: the findings then stay in the verdict
as figures and the verdict stays ``ok``.
"""

from pytest_cachecheck import Finding, Verdict, hookimpl

PROPERTY = "single-source-query"


def _queries_source(call):
    return call.system == "sql" and call.command.lstrip().upper().startswith("SELECT")


@hookimpl
def cachecheck_check(history, contract):
    findings = []
    reads = [op for op in history.operations() if op.kind == "read"]
    for read in reads:
        steps = [call.step for call in history.calls_of(read.op) if _queries_source(call)]
        if len(steps) > 1:
            where = ", ".join(str(step) for step in steps)
            findings.append(
                Finding(
                    property=PROPERTY,
                    message=(
                        f"client {read.client}'s read of {read.key} queried the source "
                        f"{len(steps)} times (steps {where})"
                    ),
                    key=read.key,
                    steps=tuple(steps),
                    figures={"queries": len(steps)},
                )
            )
    return Verdict.of(PROPERTY, findings, {"reads": len(reads), "reads_querying_twice": len(findings)})
