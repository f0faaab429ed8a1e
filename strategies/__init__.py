"""Reference caching layers: the seed document's code, bugs included, and correct variants.

Installed as ``pytest_cachecheck.strategies``.  Each layer is built from a redis-py client and a
DB-API connection (``%s`` placeholders), exactly what the harness hands a target's ``build``.
"""
