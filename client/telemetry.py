"""OpenTelemetry for every runtime process (worker, API, dev stack): traces and metrics, exporter by settings.

- Traces: the SDK's `TracingInterceptor` on the Temporal client (workers built from that client inherit it), so a
  gateway request, the workflow, its LLM activity and the approval waits share one trace. The LLM activity adds a
  span with the GenAI semantic-convention attributes; the workflow records each settled approval as a span.
- Metrics: the workflow and activities record through Temporal's replay-safe metric meter; a `MetricBuffer` on the
  Temporal runtime and the SDK's `MetricsExporter` carry them (and Temporal's own SDK metrics) into OpenTelemetry.
- Exporter: OTLP over HTTP when `AGENT_RUNTIME__OTEL__EXPORTER_OTLP_ENDPOINT` is set, the console when
  `AGENT_RUNTIME__OTEL__CONSOLE=true`, nothing by default. Tests pass in-memory exporters instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from temporalio.contrib.opentelemetry import MetricsExporter, TracingInterceptor
from temporalio.runtime import MetricBuffer, Runtime, TelemetryConfig

from settings import OtelSettings

METRIC_BUFFER_SIZE = 10_000
METRIC_EXPORT_INTERVAL_MILLIS = 15_000


@dataclass
class Telemetry:
    """What a process needs to connect with telemetry on: pass `client_options()` to `connect_client`."""

    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None
    runtime: Runtime | None = None
    interceptors: list[Any] = field(default_factory=list)

    @property
    def enabled(self) -> bool:
        return self.tracer_provider is not None

    def client_options(self) -> dict[str, Any]:
        """What `connect_client` takes: the tracing interceptors (bundled into the runtime's plugin), the runtime."""
        if not self.enabled:
            return {}
        return {"interceptors": self.interceptors, "runtime": self.runtime}


@contextlib.asynccontextmanager
async def telemetry(
    settings: OtelSettings,
    *,
    span_exporter: SpanExporter | None = None,
    metric_reader: MetricReader | None = None,
) -> AsyncIterator[Telemetry]:
    """Set up tracing and metrics for this process as configured; flush and shut them down on exit.

    Args:
        settings: The `AGENT_RUNTIME__OTEL__*` settings.
        span_exporter: Export spans here instead (tests: an in-memory exporter).
        metric_reader: Read metrics here instead (tests: an in-memory reader).
    """
    spans, reader = _exporters(settings, span_exporter, metric_reader)
    if spans is None or reader is None:
        yield Telemetry()
        return
    resource = Resource.create({"service.name": settings.service_name})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(spans)
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    # The LLM activity takes its tracer from the global provider, like any instrumented library would.
    trace.set_tracer_provider(tracer_provider)
    buffer = MetricBuffer(METRIC_BUFFER_SIZE)
    runtime = Runtime(telemetry=TelemetryConfig(metrics=buffer))
    interceptor = TracingInterceptor(tracer=tracer_provider.get_tracer("agent_runtime"))
    try:
        async with MetricsExporter(buffer, meter_provider):
            yield Telemetry(tracer_provider, meter_provider, runtime, [interceptor])
    finally:
        tracer_provider.force_flush()
        tracer_provider.shutdown()
        meter_provider.shutdown()


def _exporters(
    settings: OtelSettings, span_exporter: SpanExporter | None, metric_reader: MetricReader | None
) -> tuple[Any, MetricReader | None]:
    if span_exporter is not None or metric_reader is not None:
        return (
            SimpleSpanProcessor(span_exporter or ConsoleSpanExporter()),
            metric_reader or PeriodicExportingMetricReader(ConsoleMetricExporter()),
        )
    if settings.exporter_otlp_endpoint:
        base = settings.exporter_otlp_endpoint.rstrip("/")
        return (
            BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{base}/v1/traces")),
            PeriodicExportingMetricReader(
                OTLPMetricExporter(endpoint=f"{base}/v1/metrics"), export_interval_millis=METRIC_EXPORT_INTERVAL_MILLIS
            ),
        )
    if settings.console:
        return (
            BatchSpanProcessor(ConsoleSpanExporter()),
            PeriodicExportingMetricReader(
                ConsoleMetricExporter(), export_interval_millis=METRIC_EXPORT_INTERVAL_MILLIS
            ),
        )
    return None, None
