"""The one place a Temporal client is built.

Worker, API, CLI, tests and the replayer all connect through `connect_client`, so they share one data converter
(pydantic, because every contract type in `workflows.model` is a pydantic model) and one reading of the TLS and
API-key settings.
"""

from __future__ import annotations

from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import TLSConfig

from settings import Settings, TemporalSettings


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
