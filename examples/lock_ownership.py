"""The README's custom property: no lock is deleted by a client that did not set it.

Written against structured calls (``call.commands``, ``Command.name``/``.keys``, ``call.client``)
and the key roles: no string parsing.  ``tests/test_readme_property.py`` checks that the README
shows exactly the code between the markers, and that it finds what it should.
"""

# -- README begin
from pytest_cachecheck import LOCK, Finding, Verdict, hookimpl, key_roles

@hookimpl
def cachecheck_check(history, contract):
    roles, holders, findings = key_roles(history), {}, []
    for call in history.calls:
        for command in call.commands:
            for key in [key for key in command.keys if roles.of(key) == LOCK]:
                if command.name in ("SET", "SETNX") and call.reply:  # taken (SET ... NX)
                    holders[key] = call.client
                elif command.name in ("DEL", "UNLINK") and holders.pop(key, call.client) != call.client:
                    findings.append(Finding("lock-ownership", f"client {call.client} deleted {key!r}, "
                                            "a lock it did not hold", key=str(key), steps=(call.step,)))
    return Verdict.of("lock-ownership", findings)
# -- README end
