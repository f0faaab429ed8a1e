"""A server option that cannot be used, and how a server is named in the message that says so.

Every problem with a server the user gave (an address that is not this machine, a login without
the rights confinement needs, a refused connection) is one :class:`ServerError` whose message
names the option, the cause and the fix on one line; the plugin turns it into a usage error.
A message never shows a password: servers are named by :func:`safe_url` / :func:`safe_dsn`.
"""

from __future__ import annotations

CONNECT_TIMEOUT = 3.0
"""Seconds to wait for a server to answer when it is first checked."""


class ServerError(Exception):
    """A server option that cannot be used; the message says how to fix it."""


def safe_url(url: str | None) -> str:
    """``url`` without its password."""
    if not url or "@" not in url:
        return str(url)
    scheme, _, rest = url.partition("://")
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user + ':***' if ':' in credentials else user}@{host}"


def safe_dsn(dsn: str | None) -> str:
    if dsn and "://" in dsn:
        return safe_url(dsn)
    return " ".join(part for part in str(dsn).split() if not part.startswith("password="))
