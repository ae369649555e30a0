"""Engines, sessions and column types for SQLite (embedded default) and PostgreSQL.

SQLite needs care to be safe with several worker processes (measured: with the driver's
defaults about half of concurrently claimed messages were sent twice, because the
``sqlite3`` module runs a SELECT outside the transaction). So: the driver's own
transaction handling is off (``isolation_level=None``), every transaction starts with
``BEGIN IMMEDIATE`` (it takes the write lock up front, so two claims cannot interleave),
WAL lets readers go on while one writer writes, and ``busy_timeout`` makes a writer wait
for the lock instead of failing. See the SQLAlchemy "pysqlite serializable" recipe.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Integer,
    MetaData,
    TypeDecorator,
    create_engine,
    event,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Session

from mailer.core.clock import as_utc
from mailer.core.errors import ConfigurationError

# BIGINT primary keys on PostgreSQL (a million subscribers times every campaign is many
# delivery rows); SQLite only autoincrements a column declared exactly INTEGER.
BigId = BigInteger().with_variant(Integer(), "sqlite")
MAX_ID = 2**63 - 1  # the largest BIGINT (and SQLite INTEGER)


class UtcDateTime(TypeDecorator):
    """A timestamp that is an aware UTC ``datetime`` in Python on both databases.

    PostgreSQL keeps the zone (``timestamptz``). SQLite keeps none and compares times as
    text, so every value is converted to UTC before it is written (an aware time in
    another zone would otherwise be stored as its local wall-clock time) and marked UTC
    when it is read back. Bound parameters of raw SQL typed with it are written in the
    same text format, so comparisons with stored times hold."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        return as_utc(value)

    def process_result_value(self, value, dialect) -> datetime | None:
        return as_utc(value)


class Base(DeclarativeBase):
    # Stable constraint names, so migrations can refer to them on both databases.
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map = {datetime: UtcDateTime}


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    # NORMAL is durable against a process crash in WAL mode; only a power loss can undo
    # the last commits, and a lost record then means at most a repeated message.
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_begin_immediate(conn) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str) -> Engine:
    """Build an engine for ``url``, SQLite made safe for concurrent workers."""
    try:
        parsed = make_url(url)
    except ArgumentError as err:
        raise ConfigurationError(f"NEWSLETTER_DATABASE_URL: not a database URL: {url!r}") from err
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            parsed,
            connect_args={"isolation_level": None, "check_same_thread": False, "timeout": 30},
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin_immediate)
        return engine
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    # A send task's threads hold two connections each (NEWSLETTER_SMTP_CONNECTIONS).
    return create_engine(parsed, pool_pre_ping=True, pool_size=10, max_overflow=20)


@functools.lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    """One engine (and connection pool) per database URL per process."""
    return make_engine(url)


# A table or column the code expects is not there: PostgreSQL's undefined_table and
# undefined_column, SQLite's messages for the same.
_NO_SCHEMA_STATES = ("42P01", "42703")
_NO_SCHEMA_MESSAGES = ("no such table", "no such column", "has no column named")


def schema_missing(err: DBAPIError) -> bool:
    """Whether the database lacks this version's tables or columns: never migrated, or
    migrated by an older version (``newsletter db upgrade`` is the cure)."""
    if getattr(err.orig, "sqlstate", None) in _NO_SCHEMA_STATES:
        return True
    return str(err.orig).startswith(_NO_SCHEMA_MESSAGES)


def database_error(err: DBAPIError) -> str:
    """One line for a database error that reached a user: the database is not migrated,
    it went away, or (for the rest) what it refused."""
    reason = str(err.orig).strip().splitlines()[0] if err.orig is not None else type(err).__name__
    if schema_missing(err):
        return (f"the database is not set up for this version (NEWSLETTER_DATABASE_URL): {reason}; "
                "run `newsletter db upgrade`")
    if isinstance(err, (OperationalError, InterfaceError)) or err.connection_invalidated:
        return f"the database does not answer (NEWSLETTER_DATABASE_URL): {reason}"
    return f"the database refused it: {reason}"


def check_connection(engine: Engine) -> None:
    """Fail with one line naming the setting when the database cannot be reached."""
    try:
        with engine.connect() as conn:
            conn.execute(select(1))
    except OperationalError as err:
        reason = str(err.orig).strip().splitlines()[0] if err.orig else str(err)
        raise ConfigurationError(f"NEWSLETTER_DATABASE_URL: cannot connect: {reason}") from err
    except SQLAlchemyError as err:
        raise ConfigurationError(f"NEWSLETTER_DATABASE_URL: {err.__class__.__name__}: {err}") from err


@contextlib.contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    with Session(engine, expire_on_commit=False) as session, session.begin():
        yield session


def dialect_name(bind) -> str:
    """'sqlite' or 'postgresql' for an engine, a connection or a session."""
    if isinstance(bind, Session):
        bind = bind.get_bind()
    return bind.dialect.name


def insert_for(bind):
    """The dialect's ``insert`` (both have ``on_conflict_do_nothing/_update``)."""
    return postgresql.insert if dialect_name(bind) == "postgresql" else sqlite.insert


def enum_check(column: str, values: type) -> CheckConstraint:
    """``CHECK (column IN (...))`` over the members of a status enum."""
    listed = ", ".join(f"'{member.value}'" for member in values)
    return CheckConstraint(f"{column} IN ({listed})", name=column)
