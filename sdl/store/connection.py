"""Opening the store: SQLite's file (writable or read-only, checked whole, checkpointed, backed up), or a
PostgreSQL database named in the data directory.

By default the store is one SQLite database in WAL mode. Several processes use it at once (the lab service
and its workers, `sdl run`, read-only commands), each with its own connection; SQLite's locks serialise
writers. A data directory whose ``store.url`` names a PostgreSQL database keeps its record there instead
(sdl.store.postgres), with the same schema, queries and one-writer-at-a-time transactions.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import threading
from collections.abc import Generator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from sdl.store.db import Db
from sdl.store.migrations import migrate, schema_version
from sdl.store.postgres import Database, PostgresUnavailable, is_postgres, redact

DB_FILENAME = "sdl.sqlite3"
#: How long a writer waits for another process's write transaction before it fails, saying so.
BUSY_TIMEOUT_S = 30.0
#: A data directory's setting naming the database that holds its store, when it is not SQLite's file.
STORE_SETTING = "store.url"
#: Checkpoint the WAL into the main file after this many pages (SQLite's default is 1,000: a whole
#: campaign could live in the WAL alone, and copying the main file would copy an empty store).
AUTOCHECKPOINT_PAGES = 200


class StoreError(RuntimeError):
    """The store cannot do what was asked (unknown campaign, corrupt record...)."""


class StoreUnavailable(StoreError):
    """The store cannot be opened or has gone: the message names the path, the reason and what to do."""


class StoreDamaged(StoreUnavailable):
    """The store's file is not a whole SQLite database."""


class StoreVanished(StoreError):
    """The store's file was deleted or replaced while in use: what was written since is lost."""


class StoreFull(StoreError):
    """The filesystem holding the store has no room for a write: nothing of that write was kept (the
    transaction was rolled back), and the same write may succeed once space is freed."""


def is_full(exc: BaseException) -> bool:
    """Whether an SQLite, PostgreSQL or OS error says the disk is full."""
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    if getattr(exc, "sqlstate", None) == "53100":  # PostgreSQL's disk_full
        return True
    return isinstance(exc, OSError) and exc.errno == errno.ENOSPC


def store_url(data_dir: Path | str) -> str | None:
    """The database the data directory's store is in, when it is not SQLite's file (its ``store.url``)."""
    try:
        text = (Path(data_dir) / STORE_SETTING).read_text(encoding="utf-8").strip()
    except (FileNotFoundError, NotADirectoryError):  # no setting: SQLite's file, which says what is wrong
        return None
    except OSError as exc:
        raise StoreUnavailable(
            f"cannot read {Path(data_dir) / STORE_SETTING}: {exc.strerror or exc}"
        ) from None
    if not is_postgres(text):
        raise StoreUnavailable(
            f"{Path(data_dir) / STORE_SETTING} names {text!r}, not a database sdl can use "
            "(allowed: postgresql://USER@HOST:PORT/DATABASE)"
        )
    return text


def bind_store(data_dir: Path | str, url: str) -> None:
    """Record in the data directory that its store is the PostgreSQL database at ``url``, so every process
    that opens it (the lab service, its workers, later commands) finds the same database. Refused if the
    directory already holds a store elsewhere (an SQLite file, or another database)."""
    data_dir = Path(data_dir)
    if not is_postgres(url):
        raise StoreUnavailable(
            f"--store {url!r}: not a database sdl can use (allowed: postgresql://USER@HOST:PORT/DATABASE)"
        )
    recorded = store_url(data_dir)
    if recorded == url:
        return
    if recorded is not None:
        raise StoreUnavailable(
            f"{data_dir} keeps its store in {redact(recorded)}, not {redact(url)}; use another --data-dir "
            f"for another database (or edit {data_dir / STORE_SETTING})"
        )
    if (data_dir / DB_FILENAME).exists():
        raise StoreUnavailable(
            f"{data_dir} already holds an SQLite store ({DB_FILENAME}); use another --data-dir for "
            f"{redact(url)} (`sdl export` and `sdl import` move campaigns between stores)"
        )
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        # The URL may carry a password: the setting is its owner's alone, written whole or not at all.
        partial = data_dir / f".{STORE_SETTING}.{os.getpid()}"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(url + "\n")
        partial.replace(data_dir / STORE_SETTING)
    except OSError as exc:
        raise StoreUnavailable(
            f"cannot record the store's database in {data_dir}: {exc.strerror or exc}"
        ) from None


def free_bytes(directory: Path) -> int | None:
    """Bytes an unprivileged writer may still use on the filesystem of ``directory`` (None if unknown)."""
    try:
        stat = os.statvfs(directory)
    except OSError:
        return None
    return stat.f_bavail * stat.f_frsize


def _open_error(path: Path, exc: BaseException, writable: bool) -> StoreUnavailable:
    directory = path.parent
    if not directory.exists():
        why = f"the directory {directory} does not exist"
    elif not directory.is_dir():
        why = f"{directory} is not a directory"
    elif writable and not os.access(directory, os.W_OK):
        why = f"the directory {directory} is not writable"
    elif path.exists() and not os.access(path, os.R_OK):
        why = f"{path} is not readable"
    else:
        why = str(exc)
    return StoreUnavailable(f"cannot open the store {path}: {why}")


def row_dict(row: Any) -> dict[str, Any]:
    """A row as a dict, for code that reads many of its columns by name: a Row looks each name up by scanning
    its columns, on every access."""
    return dict(zip(row.keys(), row, strict=True))


class Connection:
    """One connection to the store's database, used under a lock by every thread of a process."""

    def __init__(self, data_dir: Path | str, *, read_only: bool = False, check: bool = True) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / DB_FILENAME
        self.read_only = read_only
        self._lock = threading.RLock()
        self._depth = 0
        self._checkpoint_lock = threading.Lock()
        self._checkpointer: sqlite3.Connection | None = None
        #: the PostgreSQL database holding the store, None for SQLite's file
        self.url = store_url(self.data_dir)
        #: where the store is, for messages (a database's URL without its password)
        self.where = str(self.path) if self.url is None else redact(self.url)
        self._conn: Db
        if self.url is not None:
            self._size_before = None
            self._conn = self._connect_postgres(self.url)
            self._inode = None
            return
        self._size_before = self.path.stat().st_size if self.path.is_file() else None
        conn = self._connect()
        conn.row_factory = sqlite3.Row
        self._conn = conn
        try:
            self._prepare(check)
        except BaseException:
            self._conn.close()
            raise
        self._inode = self._stat_inode()

    def _connect_postgres(self, url: str) -> Database:
        try:
            db = Database(url, read_only=self.read_only, busy_timeout=BUSY_TIMEOUT_S)
        except PostgresUnavailable as exc:
            raise StoreUnavailable(f"cannot open the store {self.where}: {exc}") from None
        try:
            if self.read_only:
                if schema_version(db) == 0:
                    raise StoreUnavailable(f"no store in {self.where} (run a campaign there first)")
            else:
                migrate(db)
        except BaseException:
            db.close()
            raise
        return db

    def _connect(self) -> sqlite3.Connection:
        if self.read_only:
            if not self.path.is_file():
                raise StoreUnavailable(f"no store at {self.path} (give --data-dir, or run a campaign first)")
            uri = self.path.resolve().as_uri()
            conn: sqlite3.Connection | None = None
            try:
                conn = sqlite3.connect(
                    f"{uri}?mode=ro", uri=True, check_same_thread=False, timeout=BUSY_TIMEOUT_S
                )
                conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
                return conn
            except sqlite3.DatabaseError as exc:
                if conn is not None:
                    conn.close()
                if "not a database" in str(exc) or "malformed" in str(exc):
                    raise self._damaged(str(exc)) from None
            # A read-only directory: SQLite cannot create the WAL index beside the file. Read it as an
            # immutable snapshot (nobody can be writing it there).
            try:
                conn = sqlite3.connect(f"{uri}?immutable=1", uri=True, check_same_thread=False)
                conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
                return conn
            except sqlite3.DatabaseError as exc:
                raise _open_error(self.path, exc, writable=False) from None
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(
                f"cannot create the store's directory {self.data_dir}: {exc.strerror or exc}"
            ) from None
        try:
            if not self.path.exists():
                self._create()
            return sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_S
            )
        except sqlite3.Error as exc:
            raise _open_error(self.path, exc, writable=True) from None

    def _create(self) -> None:
        """Make a new store whole before it appears under its name, so that any empty or partial
        sdl.sqlite3 is damage, never a store being created by another process."""
        scratch = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.new")
        conn = sqlite3.connect(scratch, isolation_level=None)
        try:
            migrate(conn)
        finally:
            conn.close()
        try:
            os.link(scratch, self.path)  # unlike rename, never replaces a store another process made
        except FileExistsError:
            pass
        finally:
            scratch.unlink()

    def _prepare(self, check: bool) -> None:
        if self._size_before == 0:
            # A new store appears whole (see _create): an empty one was cut short, and opening it would
            # silently start a new, empty store in its place.
            raise self._damaged("the file is empty")
        existed = bool(self._size_before)
        try:
            if not self.read_only:
                self._conn.execute("PRAGMA journal_mode=WAL")
                # FULL: a committed 'running' must survive power loss, not only a process crash.
                self._conn.execute("PRAGMA synchronous=FULL")
                self._conn.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES}")
            self._conn.execute("PRAGMA foreign_keys=ON")
            if check and existed:
                self.check_integrity()
            if not self.read_only:
                migrate(self._conn)
        except sqlite3.DatabaseError as exc:
            raise self._damaged(str(exc)) from None

    def _damaged(self, detail: str) -> StoreDamaged:
        return StoreDamaged(
            f"the store {self.path} is damaged ({detail}). Nothing was changed. Restore it from a backup "
            f"(`sdl backup DEST` makes one), or move {self.data_dir} aside to start a new store there."
        )

    def check_integrity(self) -> None:
        """Raise :class:`StoreDamaged` unless SQLite's own check finds the whole file sound (a PostgreSQL
        server keeps its own files whole)."""
        if self.url is not None:
            return
        with self._lock:
            try:
                rows = self._conn.execute("PRAGMA quick_check").fetchall()
            except sqlite3.DatabaseError as exc:
                raise self._damaged(str(exc)) from None
        problems = [r[0] for r in rows if r[0] != "ok"]
        if problems:
            raise self._damaged("; ".join(problems[:3]))

    def _stat_inode(self) -> int | None:
        try:
            return self.path.stat().st_ino
        except OSError:
            return None

    def check_present(self) -> None:
        """Raise :class:`StoreVanished` if the store's file was deleted or replaced while open."""
        if self.url is None and self._stat_inode() != self._inode:
            raise StoreVanished(
                f"the store {self.path} was deleted or replaced while sdl was using it; what was written "
                "since is lost with it. Restore the data directory, or resume from a backup."
            )

    def close(self) -> None:
        with self._checkpoint_lock:
            if self._checkpointer is not None:
                self._checkpointer.close()
                self._checkpointer = None
        with self._lock:
            if not self.read_only and self.url is None:
                # Another process may hold a read transaction; then a later checkpoint does it.
                with suppress(sqlite3.Error):
                    self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()

    @property
    def schema_version(self) -> int:
        with self._lock:
            return schema_version(self._conn)

    @contextmanager
    def _tx(self) -> Generator[Db, None, None]:
        if self.read_only:
            raise StoreError(f"the store {self.path} is open read-only")
        with self._lock:
            if self._depth:  # inside transaction(): one commit for the whole group
                self._depth += 1
                try:
                    yield self._conn
                finally:
                    self._depth -= 1
                return
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                self._depth = 1
                try:
                    yield self._conn
                    self._conn.execute("COMMIT")
                except BaseException:
                    if self._conn.in_transaction:  # SQLite may have rolled it back itself (a full disk)
                        self._conn.execute("ROLLBACK")
                    raise
                finally:
                    self._depth = 0
            except Exception as exc:
                if is_full(exc):
                    raise self._full() from exc
                raise

    @property
    def refusals(self) -> tuple[type[Exception], ...]:
        """The errors by which the database refuses a row (a broken reference, a duplicate, a value of the
        wrong type): for callers that write rows from outside (an import) and report them as bad input."""
        if isinstance(self._conn, Database):
            return self._conn.refusals
        return (sqlite3.IntegrityError, sqlite3.InterfaceError)

    def _numbered(self, table: str, column: str) -> None:
        """A row was written with its own number in ``table``'s ``column``: the database's next number
        follows it (SQLite's AUTOINCREMENT does so by itself; a PostgreSQL identity does not)."""
        if isinstance(self._conn, Database):
            self._conn.advance_key(table, column)

    def _full(self) -> StoreFull:
        if self.url is not None:
            return StoreFull(
                f"the disk of the database server holding {self.where} is full; the write was not made"
            )
        free = free_bytes(self.data_dir)
        room = f"{free:,} bytes free" if free is not None else "its free space unknown"
        return StoreFull(f"the disk holding the store {self.path} is full ({room}); the write was not made")

    def transaction(self) -> Any:
        """Group several writes into one transaction: all of them are committed, or none.

        A state change and the event announcing it commit together (one disk flush, never one without the
        other)."""
        return self._tx()

    def _read(self, sql: str, args: tuple[object, ...] = ()) -> list[Any]:
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    def checkpoint(self) -> None:
        """Copy the write-ahead log into the main file, so the main file alone is a whole store.

        On a connection of its own, so that another thread can do it (copying and syncing the file takes
        milliseconds) while this process goes on reading and writing through the main one."""
        if self.read_only or self.url is not None:
            return
        with self._checkpoint_lock:
            if self._checkpointer is None:
                self._checkpointer = sqlite3.connect(
                    self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_S
                )
                self._checkpointer.execute("PRAGMA synchronous=FULL")
            try:
                self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.OperationalError as exc:
                if is_full(exc):  # the log stays whole; the next checkpoint with room copies it
                    raise self._full() from exc
                raise

    def backup(self, destination: Path | str) -> Path:
        """A consistent copy of the whole store at ``destination`` (a file, or a directory to put it in),
        taken with SQLite's online backup while others may be writing."""
        if self.url is not None:
            raise StoreUnavailable(
                f"the store is in the PostgreSQL database {self.where}: back it up with the server's own "
                "tools (pg_dump, or continuous archiving; see README.md, 'A lab on PostgreSQL')"
            )
        target = Path(destination)
        if target.is_dir():
            target = target / DB_FILENAME
        if not target.parent.is_dir():
            raise StoreUnavailable(f"cannot write a backup to {target}: {target.parent} is not a directory")
        if target.exists():
            raise StoreUnavailable(f"{target} already exists; choose a new file or remove it first")
        partial = target.with_name(target.name + ".partial")
        out = sqlite3.connect(partial)
        try:
            with self._lock:
                assert isinstance(self._conn, sqlite3.Connection)
                self._conn.backup(out)
            out.execute("PRAGMA journal_mode=DELETE")
        except BaseException:
            out.close()
            partial.unlink(missing_ok=True)
            raise
        out.close()
        partial.replace(target)  # a backup is either whole or absent
        return target
