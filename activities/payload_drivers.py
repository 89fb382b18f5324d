"""Where content kept outside Temporal's history lives: storage drivers for the content store.

The drivers implement the SDK's `temporalio.converter.StorageDriver`, so one store serves two purposes: Temporal's
external payload storage (any payload over `EXTERNAL_STORAGE_THRESHOLD` is stored and replaced by a reference in
history, whoever sends it) and the runtime's own references to large content (activities/content.py). Every driver
is content-addressed (the key is the SHA-256 of the stored bytes), so storing the same content twice stores it once
and a claim can never point at changed content; nothing is ever updated or deleted by the runtime.

- `PostgresPayloadDriver`: table `payloads` in the projection's database (the default whenever a database is
  configured: every process of a deployment already reaches it).
- `FilePayloadDriver`: a directory (the default without a database; one machine only: every process must see the
  same directory).
- S3 or an S3-compatible store (MinIO, R2, ...): the SDK's `temporalio.contrib.aws.s3driver.S3StorageDriver` over
  aioboto3 (`pip install 'agent-runtime[s3]'`), chosen with `AGENT_RUNTIME__CONTENT__BACKEND=s3`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import asyncpg
from temporalio.api.common.v1 import Payload
from temporalio.converter import (
    StorageDriver,
    StorageDriverClaim,
    StorageDriverRetrieveContext,
    StorageDriverStoreContext,
)

from activities.postgres import apply_migrations, close_pool, create_pool

log = logging.getLogger("agent_runtime.content")

POSTGRES_DRIVER = "agent-runtime.postgres"
FILE_DRIVER = "agent-runtime.file"
S3_DRIVER = "agent-runtime.s3"

# Errors meaning "the database is not reachable right now".
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
)


class ContentStoreUnavailable(RuntimeError):
    """The content store cannot be reached, or does not have what a reference claims (the message says which)."""


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class PostgresPayloadDriver(StorageDriver):
    """Payloads in PostgreSQL's `payloads` table, keyed by the SHA-256 of their serialized bytes.

    The pool is created on first use and the schema is migrated then (the API may start before any worker did), so
    constructing a driver never needs the database to be up.

    Args:
        dsn: PostgreSQL DSN.
    """

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()

    def name(self) -> str:
        return POSTGRES_DRIVER

    def type(self) -> str:
        return POSTGRES_DRIVER

    async def store(self, context: StorageDriverStoreContext, payloads: Sequence[Payload]) -> list[StorageDriverClaim]:
        rows = [(data, _digest(data)) for data in (payload.SerializeToString() for payload in payloads)]
        async with self._connection() as conn:
            await conn.executemany(
                "INSERT INTO payloads (sha256, size, data) VALUES ($1, $2, $3) ON CONFLICT (sha256) DO NOTHING",
                [(digest, len(data), data) for data, digest in rows],
            )
        return [StorageDriverClaim(claim_data={"sha256": digest}) for _, digest in rows]

    async def retrieve(
        self, context: StorageDriverRetrieveContext, claims: Sequence[StorageDriverClaim]
    ) -> list[Payload]:
        digests = [claim.claim_data.get("sha256", "") for claim in claims]
        async with self._connection() as conn:
            rows = await conn.fetch("SELECT sha256, data FROM payloads WHERE sha256 = ANY($1::text[])", digests)
        found = {row["sha256"]: bytes(row["data"]) for row in rows}
        return [_payload(found, digest) for digest in digests]

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        try:
            pool = await self._ready_pool()
            async with pool.acquire() as conn:
                yield conn
        except _UNAVAILABLE as err:
            raise ContentStoreUnavailable(f"the content store (PostgreSQL) is unreachable: {_describe(err)}") from err

    async def _ready_pool(self) -> asyncpg.Pool:
        if self._pool is not None:
            return self._pool
        async with self._lock:
            if self._pool is None:
                await apply_migrations(self._dsn)
                self._pool = await create_pool(self._dsn)
        return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await close_pool(self._pool)
            self._pool = None


class FilePayloadDriver(StorageDriver):
    """Payloads as files `<root>/<2 hex>/<sha256>` (written to a temporary file, then renamed into place).

    Args:
        root: The directory; created when missing.
    """

    def __init__(self, root: Path) -> None:
        self._root = root

    def name(self) -> str:
        return FILE_DRIVER

    def type(self) -> str:
        return FILE_DRIVER

    async def store(self, context: StorageDriverStoreContext, payloads: Sequence[Payload]) -> list[StorageDriverClaim]:
        return await asyncio.to_thread(self._store, [payload.SerializeToString() for payload in payloads])

    async def retrieve(
        self, context: StorageDriverRetrieveContext, claims: Sequence[StorageDriverClaim]
    ) -> list[Payload]:
        digests = [claim.claim_data.get("sha256", "") for claim in claims]
        found = await asyncio.to_thread(self._read, digests)
        return [_payload(found, digest) for digest in digests]

    def _path(self, digest: str) -> Path:
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ContentStoreUnavailable(f"not a content key: {digest[:80]!r}")
        return self._root / digest[:2] / digest

    def _store(self, blobs: list[bytes]) -> list[StorageDriverClaim]:
        claims = []
        for data in blobs:
            digest = _digest(data)
            path = self._path(digest)
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as temporary:
                    temporary.write(data)
                os.replace(temporary.name, path)
            claims.append(StorageDriverClaim(claim_data={"sha256": digest}))
        return claims

    def _read(self, digests: list[str]) -> dict[str, bytes]:
        found = {}
        for digest in digests:
            with contextlib.suppress(FileNotFoundError):
                found[digest] = self._path(digest).read_bytes()
        return found


def _payload(found: dict[str, bytes], digest: str) -> Payload:
    data = found.get(digest)
    if data is None:
        raise ContentStoreUnavailable(f"the content store has no entry {digest}")
    payload = Payload()
    payload.ParseFromString(data)
    return payload


def s3_driver(s3_client: Any, bucket: str) -> StorageDriver:
    """The SDK's S3 driver over an aioboto3 S3 client (`session.client("s3", endpoint_url=...)` for MinIO and co)."""
    from temporalio.contrib.aws.s3driver import S3StorageDriver  # noqa: PLC0415 - optional extra (aioboto3)
    from temporalio.contrib.aws.s3driver.aioboto3 import new_aioboto3_client  # noqa: PLC0415

    return S3StorageDriver(client=new_aioboto3_client(s3_client), bucket=bucket, driver_name=S3_DRIVER)


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
