"""The one place a Temporal client is built, and the content store it relies on.

Worker, API, CLI, tests and the replayer all connect through `connect_client`, so they share one data converter
(pydantic, because every contract type in `workflows.model` is a pydantic model, with Temporal's external payload
storage over the content store) and one reading of the TLS and API-key settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeIndexedValueType
from temporalio.service import RPCError, TLSConfig

from activities.content import ContentStore
from activities.payload_drivers import FilePayloadDriver, PostgresPayloadDriver, s3_driver
from client.plugin import AgentRuntimePlugin
from settings import ContentSettings, Settings, TemporalSettings
from workflows.model import (
    SEARCH_ATTRIBUTES,
    SESSION_ATTRIBUTES,
    ConversationConfig,
)

log = logging.getLogger("agent_runtime.connection")

# After the SDK shuts a worker or a test server down, its Rust thread still briefly holds a Python thread state; if
# the interpreter exits in that window the process aborts ("PyGILState_Release: thread state ... must be current",
# exit 134; temporalio/sdk-python#300). Measured here: ~1 in 3 exits crash with no pause, none with 50 ms.
SHUTDOWN_SETTLE_SECONDS = 0.2


async def settle_after_shutdown() -> None:
    """Pause after an SDK shutdown, before the process may exit (see SHUTDOWN_SETTLE_SECONDS)."""
    await asyncio.sleep(SHUTDOWN_SETTLE_SECONDS)


@contextlib.asynccontextmanager
async def open_content_store(settings: Settings) -> AsyncIterator[ContentStore]:
    """The content store the settings describe (see `ContentSettings`), open for as long as the context is.

    Never needs the store to be reachable yet: PostgreSQL is connected to on first use.
    """
    content = settings.content
    backend = content.backend
    if backend == "auto":
        backend = "postgres" if settings.database_url is not None else "file"
    if backend == "postgres":
        if settings.database_url is None:
            raise ValueError("the postgres content store needs AGENT_RUNTIME__DATABASE_URL")
        driver = PostgresPayloadDriver(settings.database_url.get_secret_value())
        try:
            yield ContentStore(driver)
        finally:
            await driver.close()
    elif backend == "file":
        yield ContentStore(FilePayloadDriver(content.path))
    else:
        async with _s3_client(content) as s3:
            yield ContentStore(s3_driver(s3, content.s3_bucket or ""))


@contextlib.asynccontextmanager
async def _s3_client(content: ContentSettings) -> AsyncIterator[Any]:
    import aioboto3  # noqa: PLC0415 - optional extra, only for backend s3

    async with aioboto3.Session().client("s3", endpoint_url=content.s3_endpoint_url) as s3:
        yield s3


def with_content_store(client: Client, content: ContentStore, threshold: int | None = None) -> Client:
    """The same connection with the runtime's plugin over `content` (an embedded worker and its client share it).

    The client's own plugin settings (tracing, interceptors) are kept.
    """
    config = client.config()
    previous = next((p for p in config["plugins"] if isinstance(p, AgentRuntimePlugin)), None)
    plugins = [p for p in config["plugins"] if not isinstance(p, AgentRuntimePlugin)]
    plugin = previous.over(content, threshold) if previous else AgentRuntimePlugin(content, threshold=threshold)
    config["plugins"] = [*plugins, plugin]
    return Client(**config)


async def connect_client(
    settings: TemporalSettings | Settings,
    *,
    content: ContentStore | None = None,
    interceptors: Sequence[Any] = (),
    tracing: bool = False,
    **kwargs: Any,
) -> Client:
    """Connect to Temporal as configured, with the runtime's plugin (client/plugin.py).

    Pass `**Telemetry.client_options()` (client/telemetry.py) to trace with the process's telemetry.

    Args:
        settings: The Temporal settings, or the whole settings (their `temporal` part is used).
        content: The content store: payloads over the external storage threshold go there. Every process of a
            deployment that exchanges payloads with the workflows must use the same store.
        interceptors: More client and worker interceptors, bundled into the plugin.
        tracing: Trace Temporal calls and the workflows (needs telemetry set up in this process).
        **kwargs: Passed to `temporalio.client.Client.connect` (e.g. `identity`, `runtime`); they win over the values
            derived from the settings.

    Returns:
        A connected client.

    Raises:
        RuntimeError: The server cannot be reached (from `Client.connect`).
        OSError: A configured TLS file cannot be read.
    """
    temporal = settings.temporal if isinstance(settings, Settings) else settings
    threshold = settings.content.external_storage_threshold if isinstance(settings, Settings) else None
    options: dict[str, Any] = {
        "namespace": temporal.namespace,
        "plugins": [AgentRuntimePlugin(content, threshold=threshold, interceptors=interceptors, tracing=tracing)],
        "tls": _tls(temporal),
        "api_key": temporal.api_key.get_secret_value() if temporal.api_key else None,
    }
    options.update(kwargs)
    return await Client.connect(temporal.address, **options)


def _tls(temporal: TemporalSettings) -> bool | TLSConfig | None:
    """TLS as `Client.connect` takes it.

    None (not False) when nothing is configured but an API key is: the SDK then turns TLS on itself, which is
    what Temporal Cloud needs, while a plain local server keeps working without TLS.
    """
    paths = (temporal.tls_ca_path, temporal.tls_cert_path, temporal.tls_key_path)
    if any(path is not None for path in paths):
        return TLSConfig(
            server_root_ca_cert=temporal.tls_ca_path.read_bytes() if temporal.tls_ca_path else None,
            client_cert=temporal.tls_cert_path.read_bytes() if temporal.tls_cert_path else None,
            client_private_key=temporal.tls_key_path.read_bytes() if temporal.tls_key_path else None,
        )
    if temporal.tls:
        return True
    return None if temporal.api_key else False


async def register_search_attributes(client: Client) -> frozenset[str]:
    """Register the runtime's custom search attributes in the client's namespace where they are missing.

    Returns:
        The names of the runtime's attributes that are registered (now or before); none when the server refuses to
        list them, those registered before when it refuses to add the missing ones (no operator permission, e.g. on
        Temporal Cloud without admin rights, or a server without the operator API). A session sets only attributes
        that are registered: setting an unregistered one would fail every workflow task.
    """
    try:
        existing = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace)
        )
    except RPCError as err:
        log.warning("Search attributes unavailable (%s); sessions will not set them", err.message)
        return frozenset()
    registered = frozenset(key.name for key in SEARCH_ATTRIBUTES if key.name in existing.custom_attributes)
    missing = {key.name: key for key in SEARCH_ATTRIBUTES if key.name not in registered}
    if not missing:
        return registered
    try:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=client.namespace,
                search_attributes={
                    name: IndexedValueType.ValueType(SearchAttributeIndexedValueType(key.indexed_value_type))
                    for name, key in missing.items()
                },
            )
        )
    except RPCError as err:
        log.warning("Search attributes %s not registered (%s); sessions will not set them", list(missing), err.message)
        return registered
    return registered | frozenset(missing)


async def ensure_search_attributes(client: Client) -> bool:
    """Register the runtime's custom search attributes if they are missing; True when all of them are registered."""
    return {key.name for key in SEARCH_ATTRIBUTES} <= await register_search_attributes(client)


async def session_config(client: Client, settings: Settings) -> ConversationConfig:
    """The configuration new sessions start with: the settings, plus the search attributes that can be used."""
    registered = await register_search_attributes(client)
    return settings.conversation_config().model_copy(
        update={
            "search_attributes": all(key.name in registered for key in SESSION_ATTRIBUTES),
            "waiting_call_attributes": all(key.name in registered for key in SEARCH_ATTRIBUTES),
        }
    )
