"""OpenTelemetry for every runtime process (worker, API, dev stack, CLI): traces and metrics, exporter by settings.

Every process enters `telemetry(settings.otel)` once and connects with `connect_client(...,
**otel.client_options())`. The API's request spans come from FastAPI's own OpenTelemetry support, which uses the
process's tracer provider and continues the gateway's W3C `traceparent`.

- Traces: a replay-safe tracer provider (temporalio.contrib.opentelemetry.create_tracer_provider: deterministic span
  ids in workflows, nothing exported while history replays) installed as the process's provider, and tracing in the
  runtime's Temporal plugin (client/plugin.py). One trace per request: the API's request span (continuing the
  gateway's W3C `traceparent`) -> the update or signal -> the workflow's span for that input -> each LLM call and
  projection write, plus an `approval.wait` span per settled approval (workflows/tracing.py).
- Metrics: the workflow and activities record through Temporal's replay-safe metric meter; a `MetricBuffer` on the
  Temporal runtime carries them, with Temporal's own SDK metrics, into an OpenTelemetry meter provider
  (client/metric_export.py), whose views give the histograms their bucket boundaries (workflows/metrics.py).
- Exporter: OTLP over HTTP when `AGENT_RUNTIME__OTEL__EXPORTER_OTLP_ENDPOINT` is set, the console when
  `AGENT_RUNTIME__OTEL__CONSOLE=true`, nothing by default. Tests pass in-memory exporters instead.

OpenTelemetry allows one tracer provider per process, so the first `telemetry` installs it (its `service.name`
stays) and each `telemetry` context adds its span exporter to it for as long as it is open.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from temporalio.contrib.opentelemetry import ReplaySafeTracerProvider, create_tracer_provider
from temporalio.runtime import MetricBuffer, MetricBufferDurationFormat, Runtime, TelemetryConfig

from client.metric_export import MetricDrain
from settings import OtelSettings
from workflows.metrics import HISTOGRAM_BUCKETS

METRIC_BUFFER_SIZE = 10_000
METRIC_EXPORT_INTERVAL_MILLIS = 15_000


@dataclass
class Telemetry:
    """What a process needs to connect with telemetry on: pass `client_options()` to `connect_client`."""

    tracer_provider: ReplaySafeTracerProvider | None = None
    meter_provider: MeterProvider | None = None
    runtime: Runtime | None = None

    @property
    def enabled(self) -> bool:
        return self.tracer_provider is not None

    def client_options(self) -> dict[str, Any]:
        """What `connect_client` takes: tracing on, and the Temporal runtime whose metrics are exported."""
        if not self.enabled:
            return {}
        return {"tracing": True, "runtime": self.runtime}


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

    Raises:
        RuntimeError: Another tracer provider than the runtime's is installed in this process.
    """
    spans, reader = _exporters(settings, span_exporter, metric_reader)
    if spans is None or reader is None:
        yield Telemetry()
        return
    resource = Resource.create({"service.name": settings.service_name})
    tracer_provider, exporters = _process_tracing(resource)
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader], views=_views())
    # Durations in seconds, as OpenTelemetry's conventions want them.
    buffer = MetricBuffer(METRIC_BUFFER_SIZE, MetricBufferDurationFormat.SECONDS)
    runtime = Runtime(telemetry=TelemetryConfig(metrics=buffer))
    exporters.add(spans)
    try:
        async with MetricDrain(buffer, meter_provider).running():
            yield Telemetry(tracer_provider, meter_provider, runtime)
    finally:
        exporters.remove(spans)
        spans.shutdown()  # exports what is still batched
        meter_provider.shutdown()  # a last collection and export


def _views() -> list[View]:
    return [
        View(instrument_name=name, aggregation=ExplicitBucketHistogramAggregation(list(bounds)))
        for name, bounds in HISTOGRAM_BUCKETS.items()
    ]


def _exporters(
    settings: OtelSettings, span_exporter: SpanExporter | None, metric_reader: MetricReader | None
) -> tuple[SpanProcessor | None, MetricReader | None]:
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


class _OpenExporters(SpanProcessor):
    """The span processors of the `telemetry` contexts open in this process (one, outside tests)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._processors: tuple[SpanProcessor, ...] = ()

    def add(self, processor: SpanProcessor) -> None:
        with self._lock:
            self._processors = (*self._processors, processor)

    def remove(self, processor: SpanProcessor) -> None:
        with self._lock:
            self._processors = tuple(p for p in self._processors if p is not processor)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        for processor in self._processors:
            processor.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        for processor in self._processors:
            processor.on_end(span)

    def shutdown(self) -> None:
        # Each processor is shut down by the context that added it.
        return None

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return all(processor.force_flush(timeout_millis) for processor in self._processors)


# OpenTelemetry allows one tracer provider per process (see the module docstring); this is ours, once installed.
_installed: tuple[ReplaySafeTracerProvider, _OpenExporters] | None = None
_install_lock = threading.Lock()


def _process_tracing(resource: Resource) -> tuple[ReplaySafeTracerProvider, _OpenExporters]:
    global _installed
    with _install_lock:
        if _installed is None:
            provider = create_tracer_provider(resource=resource)
            exporters = _OpenExporters()
            provider.add_span_processor(exporters)
            trace.set_tracer_provider(provider)
            _installed = provider, exporters
        provider = _installed[0]
    if trace.get_tracer_provider() is not provider:
        raise RuntimeError(
            "another OpenTelemetry tracer provider is installed in this process; the runtime's telemetry needs its "
            "own (a replay-safe one, for spans from workflow code)"
        )
    return _installed
