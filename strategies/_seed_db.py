"""The seed's ``db`` object: ``db.query(sql, *params)`` and ``db.execute(sql, *params)``.

The seed calls these without defining them; this is the obvious reading over a DB-API
connection: ``query`` returns the first row as a dict (or None), ``execute`` runs one statement
and commits it.
"""

from __future__ import annotations

from typing import Any


class SeedDatabase:
    def __init__(self, connection: Any) -> None:
        self.connection = connection

    def query(self, sql: str, *params: Any) -> dict | None:
        cursor = self.connection.cursor()
        cursor.execute(sql, params)
        row = cursor.fetchone()
        if row is None:
            return None
        columns = [column[0] for column in cursor.description]
        return dict(zip(columns, row))

    def execute(self, sql: str, *params: Any) -> None:
        cursor = self.connection.cursor()
        cursor.execute(sql, params)
        self.connection.commit()
