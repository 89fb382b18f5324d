"""Temporal's buffered metrics reach OpenTelemetry under their own names and labels (client/metric_export.py).

The SDK's `MetricsExporter` keyed instruments and attribute sets by `id()`: once Temporal freed a metric or an
attribute set, the next one could take its id, and values landed in another instrument under another's labels (a
latency histogram held token counts labelled `type=input`). The runtime records exactly that way: a histogram and a
counter per call, a fresh attribute set per recording.
"""

from __future__ import annotations

import gc

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from temporalio.runtime import MetricBuffer, MetricBufferDurationFormat, Runtime, TelemetryConfig

from client.metric_export import MetricDrain


def test_metrics_created_per_call_keep_their_names_and_labels() -> None:
    buffer = MetricBuffer(10_000, MetricBufferDurationFormat.SECONDS)
    runtime = Runtime(telemetry=TelemetryConfig(metrics=buffer))
    reader = InMemoryMetricReader()
    drain = MetricDrain(buffer, MeterProvider(metric_readers=[reader]))
    meter = runtime.metric_meter
    for _ in range(30):
        latency = meter.create_histogram_float("latency", "seconds per call", "s")
        tokens = meter.create_counter("tokens", "tokens per call", "{token}")
        labels = {"model": "m"}
        latency.record(1.5, labels)
        tokens.add(11, labels | {"type": "input"})
        tokens.add(7, labels | {"type": "output"})
        del latency, tokens
        gc.collect()  # frees the metric and attribute objects, so their ids are reused
        drain.drain()

    data = reader.get_metrics_data()
    assert data is not None
    points = {
        (metric.name, tuple(sorted((k, v) for k, v in point.attributes.items() if k != "service_name"))): point
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        for point in metric.data.data_points
    }
    assert set(points) == {
        ("latency", (("model", "m"),)),
        ("tokens", (("model", "m"), ("type", "input"))),
        ("tokens", (("model", "m"), ("type", "output"))),
    }
    latency_point = points[("latency", (("model", "m"),))]
    assert (latency_point.count, latency_point.sum) == (30, 45.0)
    assert points[("tokens", (("model", "m"), ("type", "input")))].value == 330
    assert points[("tokens", (("model", "m"), ("type", "output")))].value == 210
