"""What the store needs of a database connection: SQLite's own, or PostgreSQL's through sdl.store.postgres."""

from __future__ import annotations

from typing import Any, Protocol


class Db(Protocol):
    """The part of ``sqlite3.Connection`` the store uses (rows are read by position and by column name)."""

    @property
    def in_transaction(self) -> bool: ...

    def execute(self, sql: str, parameters: Any = (), /) -> Any: ...

    def executemany(self, sql: str, parameters: Any, /) -> Any: ...

    def close(self) -> None: ...
