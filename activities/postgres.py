"""PostgreSQL itself: connection pools and the schema's migrations (shared by the projection and the content store).

Migrations are the numbered SQL files in `activities/migrations/`, applied in order under an advisory lock, each in
its own transaction, and recorded in `schema_migrations`. `agent-runtime migrate`, the dev stack and the worker
apply them at start; the content store's driver applies them before its first use too.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import asyncpg

log = logging.getLogger("agent_runtime.postgres")

# pg_advisory_lock key of the migration runner: the first 8 bytes of sha256("agent-runtime schema migrations").
MIGRATION_LOCK_KEY = int.from_bytes(hashlib.sha256(b"agent-runtime schema migrations").digest()[:8], "big", signed=True)
# A write has a 10 s budget; connecting must fail well inside it when the server is gone.
CONNECT_TIMEOUT_SECONDS = 3.0
COMMAND_TIMEOUT_SECONDS = 5.0


class MigrationError(RuntimeError):
    """The migrations folder is malformed or a migration failed (the message names it)."""


# --- migrations ---


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


_MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


def load_migrations() -> list[Migration]:
    """The migrations shipped with the package (`activities/migrations/NNNN_name.sql`), in version order.

    Raises:
        MigrationError: A file is misnamed or two share a version.
    """
    found: dict[int, Migration] = {}
    for entry in (resources.files("activities") / "migrations").iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _MIGRATION_FILE.match(entry.name)
        if match is None:
            raise MigrationError(f"migration file {entry.name!r} is not named NNNN_lowercase_name.sql")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"two migrations have version {version}: {found[version].name}, {match.group(2)}")
        found[version] = Migration(version, match.group(2), entry.read_text(encoding="utf-8"))
    return [found[version] for version in sorted(found)]


async def apply_migrations(dsn: str) -> list[Migration]:
    """Bring the database's schema up to date; safe to run concurrently and repeatedly.

    Args:
        dsn: PostgreSQL DSN (any server 14+).

    Returns:
        The migrations applied now (empty when the schema was current).

    Raises:
        MigrationError: A migration failed; the ones before it stay applied.
        OSError, asyncpg.PostgresError: The database is not reachable.
    """
    migrations = load_migrations()
    conn = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT_SECONDS)
    try:
        # Session-level lock: a second runner (another worker starting) waits here, then finds nothing to do.
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        try:
            await conn.execute(
                """
                CREATE TABLE IF NOT EXISTS schema_migrations (
                    version     integer     PRIMARY KEY,
                    name        text        NOT NULL,
                    checksum    text        NOT NULL,
                    applied_at  timestamptz NOT NULL DEFAULT now()
                )
                """
            )
            applied = {row["version"]: row["checksum"] for row in await conn.fetch("SELECT * FROM schema_migrations")}
            done: list[Migration] = []
            for migration in migrations:
                if migration.version in applied:
                    if applied[migration.version] != migration.checksum:
                        log.warning(
                            "Migration %04d_%s changed after it was applied; edit the schema with a new migration",
                            migration.version,
                            migration.name,
                        )
                    continue
                try:
                    async with conn.transaction():
                        await conn.execute(migration.sql)
                        await conn.execute(
                            "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                            migration.version,
                            migration.name,
                            migration.checksum,
                        )
                except asyncpg.PostgresError as err:
                    raise MigrationError(f"migration {migration.version:04d}_{migration.name} failed: {err}") from err
                log.info("Applied migration %04d_%s", migration.version, migration.name)
                done.append(migration)
            return done
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    finally:
        await conn.close()


async def create_pool(dsn: str, *, max_size: int = 5) -> asyncpg.Pool:
    """A connection pool that opens connections only when needed, so it can be created while PostgreSQL is down.

    JSONB columns read and write Python values (dicts, lists) on its connections.
    """
    return await asyncpg.create_pool(
        dsn,
        min_size=0,
        max_size=max_size,
        timeout=CONNECT_TIMEOUT_SECONDS,
        command_timeout=COMMAND_TIMEOUT_SECONDS,
        init=_init_connection,
    )


async def close_pool(pool: asyncpg.Pool, timeout: float = 10.0) -> None:
    """Close the pool, waiting `timeout` seconds for connections in use before terminating them."""
    try:
        await asyncio.wait_for(pool.close(), timeout)
    except TimeoutError:
        pool.terminate()


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=_json, decoder=json.loads, schema="pg_catalog")


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def describe_dsn(dsn: str) -> str:
    """A DSN fit for printing: a password, in the user part or as a `password=` parameter, is masked."""
    scheme, sep, rest = dsn.partition("://")
    if not sep:
        return "(a malformed DSN)"
    credentials, at, location = rest.rpartition("@")
    if at and ":" in credentials:
        rest = f"{credentials.split(':', 1)[0]}:***@{location}"
    return f"{scheme}://" + re.sub(r"(?i)(password=)[^&]*", r"\1***", rest)
