"""The interposers: where the layer's Redis commands and SQL statements become scheduling points.

A layer gets a real ``redis.Redis`` and a real DB-API connection; underneath, each command or
statement stops at the scheduler, runs, and is recorded as a structured call in the history
(:mod:`._redis`, :mod:`._sql`).  :mod:`._redis_guard` keeps a layer's connections logged in as
the run's own confined user.
"""
