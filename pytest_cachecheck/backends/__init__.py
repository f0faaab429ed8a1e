"""The backends: the cache and the source an exploration runs against, embedded or real.

The embedded default is fakeredis and SQLite in process (:mod:`._fake_cache`,
:mod:`._sqlite_source`); the real side is a Redis and a PostgreSQL the user points at
(:mod:`._real_redis`, :mod:`._postgres`), confined by the servers themselves (a per-run ACL user,
a per-run role and schema) and swept when a run dies.  :mod:`._servers` checks what the user
gave; :mod:`._environment` tells a server's fault from a finding about the layer.
"""
