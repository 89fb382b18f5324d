"""Temporal's metrics into OpenTelemetry: drain the runtime's `MetricBuffer` into a meter provider.

Temporal records metrics (its own, and the workflows' and activities' through their replay-safe metric meters) into
a buffer that the process must drain. The SDK's drain, `temporalio.contrib.opentelemetry.MetricsExporter`, caches
instruments and attribute sets by `id()` without keeping the objects alive. Temporal frees a metric created for one
recording and the attribute set of each recording, the next object may get the same id, and values land in another
instrument under another's labels: a latency histogram held token counts labelled `type=input` (issue 12), and the
labels of any counter could swap. Here instruments are keyed by name and the attributes are read from each update.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import timedelta

from opentelemetry.metrics import CallbackOptions, Counter, Histogram, MeterProvider, Observation
from temporalio.runtime import (
    BUFFERED_METRIC_KIND_COUNTER,
    BUFFERED_METRIC_KIND_GAUGE,
    BUFFERED_METRIC_KIND_HISTOGRAM,
    BufferedMetric,
    BufferedMetricUpdate,
    MetricBuffer,
)

log = logging.getLogger("agent_runtime.telemetry")

# The buffer holds a bounded number of updates (client/telemetry.py); draining often keeps it from overflowing.
DRAIN_INTERVAL = timedelta(seconds=1)

Attributes = Mapping[str, str | int | float | bool]


class MetricDrain:
    """Moves the buffered updates into instruments of `meter_provider`, every `interval` while `running()`.

    Args:
        buffer: The buffer of the Temporal runtime the process's clients and workers use.
        meter_provider: Where the metrics go (its readers export them).
        interval: How often the buffer is drained.
    """

    def __init__(
        self, buffer: MetricBuffer, meter_provider: MeterProvider, *, interval: timedelta = DRAIN_INTERVAL
    ) -> None:
        self._buffer = buffer
        self._meter = meter_provider.get_meter("temporalio")
        self._interval = interval
        self._counters: dict[str, Counter] = {}
        self._histograms: dict[str, Histogram] = {}
        self._gauges: dict[str, dict[frozenset[tuple[str, str | int | float | bool]], float]] = {}
        # Gauges are read by the metric reader's thread while the drain writes them.
        self._gauge_lock = threading.Lock()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Drain periodically for the life of the context, and once more when it ends (nothing recorded is lost)."""
        task = asyncio.create_task(self._drain_forever(), name="temporal-metric-drain")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.drain()

    async def _drain_forever(self) -> None:
        while True:
            self.drain()
            await asyncio.sleep(self._interval.total_seconds())

    def drain(self) -> None:
        for update in self._buffer.retrieve_updates():
            try:
                self._apply(update)
            except Exception:
                log.exception("Could not export Temporal metric %s", update.metric.name)

    def _apply(self, update: BufferedMetricUpdate) -> None:
        metric = update.metric
        attributes: Attributes = dict(update.attributes)
        if metric.kind == BUFFERED_METRIC_KIND_COUNTER:
            self._counter(metric).add(update.value, attributes)
        elif metric.kind == BUFFERED_METRIC_KIND_HISTOGRAM:
            self._histogram(metric).record(update.value, attributes)
        elif metric.kind == BUFFERED_METRIC_KIND_GAUGE:
            with self._gauge_lock:
                self._gauge(metric)[frozenset(attributes.items())] = update.value

    def _counter(self, metric: BufferedMetric) -> Counter:
        if metric.name not in self._counters:
            self._counters[metric.name] = self._meter.create_counter(
                metric.name, unit=metric.unit or "", description=metric.description or ""
            )
        return self._counters[metric.name]

    def _histogram(self, metric: BufferedMetric) -> Histogram:
        if metric.name not in self._histograms:
            self._histograms[metric.name] = self._meter.create_histogram(
                metric.name, unit=metric.unit or "", description=metric.description or ""
            )
        return self._histograms[metric.name]

    def _gauge(self, metric: BufferedMetric) -> dict[frozenset[tuple[str, str | int | float | bool]], float]:
        if metric.name not in self._gauges:
            values: dict[frozenset[tuple[str, str | int | float | bool]], float] = {}
            self._gauges[metric.name] = values

            def observe(_: CallbackOptions) -> Iterable[Observation]:
                with self._gauge_lock:
                    return [Observation(value, dict(attributes)) for attributes, value in values.items()]

            self._meter.create_observable_gauge(
                metric.name, callbacks=[observe], unit=metric.unit or "", description=metric.description or ""
            )
        return self._gauges[metric.name]
