"""The one place a Temporal client is built.

Worker, API, CLI, tests and the replayer all connect through `connect_client`, so they share one data converter
(pydantic, because every contract type in `workflows.model` is a pydantic model) and one reading of the TLS and
API-key settings.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeIndexedValueType
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, TLSConfig

from settings import Settings, TemporalSettings
from workflows.model import SEARCH_ATTRIBUTES, ConversationConfig

log = logging.getLogger("agent_runtime.connection")

# After the SDK shuts a worker or a test server down, its Rust thread still briefly holds a Python thread state; if
# the interpreter exits in that window the process aborts ("PyGILState_Release: thread state ... must be current",
# exit 134; temporalio/sdk-python#300). Measured here: ~1 in 3 exits crash with no pause, none with 50 ms.
SHUTDOWN_SETTLE_SECONDS = 0.2


async def settle_after_shutdown() -> None:
    """Pause after an SDK shutdown, before the process may exit (see SHUTDOWN_SETTLE_SECONDS)."""
    await asyncio.sleep(SHUTDOWN_SETTLE_SECONDS)


async def connect_client(settings: TemporalSettings | Settings, **kwargs: Any) -> Client:
    """Connect to Temporal as configured.

    Args:
        settings: The Temporal settings, or the whole settings (their `temporal` part is used).
        **kwargs: Passed to `temporalio.client.Client.connect` (e.g. `interceptors`, `identity`); they win over
            the values derived from the settings.

    Returns:
        A connected client using the pydantic data converter.

    Raises:
        RuntimeError: The server cannot be reached (from `Client.connect`).
        OSError: A configured TLS file cannot be read.
    """
    temporal = settings.temporal if isinstance(settings, Settings) else settings
    options: dict[str, Any] = {
        "namespace": temporal.namespace,
        "data_converter": pydantic_data_converter,
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


async def ensure_search_attributes(client: Client) -> bool:
    """Register the runtime's custom search attributes in the client's namespace if they are missing.

    Returns:
        True when all of them are registered (now or before). False when the server refuses (no operator
        permission, e.g. on Temporal Cloud without admin rights, or a server without the operator API): sessions
        then run without search attributes, since setting an unregistered one would fail every workflow task.
    """
    try:
        existing = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace)
        )
        missing = {key.name: key for key in SEARCH_ATTRIBUTES if key.name not in existing.custom_attributes}
        if missing:
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
        log.warning("Search attributes unavailable (%s); sessions will not set them", err.message)
        return False
    return True


async def session_config(client: Client, settings: Settings) -> ConversationConfig:
    """The configuration new sessions start with: the settings, plus search attributes if they can be used."""
    return settings.conversation_config().model_copy(
        update={"search_attributes": await ensure_search_attributes(client)}
    )
