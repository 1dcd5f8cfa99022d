"""Gateway counters and latency histograms, rendered in the Prometheus text format (pure).

The format is Prometheus's text exposition format, version 0.0.4
(https://prometheus.io/docs/instrumenting/exposition_formats/).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from synk.core.histogram import Histogram

__all__ = ["Histogram", "Metrics", "PrometheusCollector"]


@dataclass
class Metrics:
    """What ``GET /metrics`` reports."""

    clients: int = 0
    keys: int = 0
    messages_in: int = 0
    bytes_in: int = 0
    messages_out: int = 0
    bytes_out: int = 0
    store_messages: int = 0
    slow_resyncs: int = 0
    slow_closes: int = 0
    store_reconnects: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    #: from a message's arrival in a client's backlog (from the store, at once) to its write to the socket
    delivery: Histogram = field(
        default_factory=lambda: Histogram("synk_delivery_seconds", "From a message reaching the gateway to its write to the client.")
    )
    #: more histograms to render (a world's flush duration, when it runs in the same process)
    extra: list[Histogram] = field(default_factory=list)

    def render(self) -> str:
        """The Prometheus text exposition of every counter."""
        lines: list[str] = []

        def one(name: str, kind: str, help_: str, value: int) -> None:
            lines.extend((f"# HELP synk_{name} {help_}", f"# TYPE synk_{name} {kind}", f"synk_{name} {value}"))

        one("clients", "gauge", "Connected websocket clients.", self.clients)
        one("subscribed_keys", "gauge", "Keys with at least one subscribed client.", self.keys)
        one("messages_in_total", "counter", "Messages received from clients.", self.messages_in)
        one("bytes_in_total", "counter", "Bytes received from clients.", self.bytes_in)
        one("messages_out_total", "counter", "Messages sent to clients.", self.messages_out)
        one("bytes_out_total", "counter", "Bytes sent to clients.", self.bytes_out)
        one("store_messages_total", "counter", "Messages received from the store.", self.store_messages)
        one("slow_client_resyncs_total", "counter", "Backlogs discarded and re-snapshotted for slow clients.", self.slow_resyncs)
        one("slow_client_closes_total", "counter", "Clients closed for staying too slow.", self.slow_closes)
        one("store_reconnects_total", "counter", "Times the store subscription was re-established.", self.store_reconnects)
        lines.extend(("# HELP synk_errors_total Error messages sent to clients, by code.", "# TYPE synk_errors_total counter"))
        for code, n in sorted(self.errors.items()):
            # A handler's ProtocolError may carry any code: escaped as the text format asks.
            label = code.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
            lines.append(f'synk_errors_total{{code="{label}"}} {n}')
        for histogram in (self.delivery, *self.extra):
            lines.extend(histogram.render())
        return "\n".join(lines) + "\n"


class PrometheusCollector:
    """The gateway's metrics as a ``prometheus_client`` collector, for an app that has a registry.

    ``prometheus_client.REGISTRY.register(PrometheusCollector(gateway.metrics))``:
    the same counters, gauges and histograms as ``/metrics``, collected
    when the registry is scraped. Needs ``prometheus_client``.
    """

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        """The metric families, read now."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        m = self.metrics
        yield GaugeMetricFamily("synk_clients", "Connected websocket clients.", value=m.clients)
        yield GaugeMetricFamily("synk_subscribed_keys", "Keys with at least one subscribed client.", value=m.keys)
        for name, help_, value in (
            ("synk_messages_in", "Messages received from clients.", m.messages_in),
            ("synk_bytes_in", "Bytes received from clients.", m.bytes_in),
            ("synk_messages_out", "Messages sent to clients.", m.messages_out),
            ("synk_bytes_out", "Bytes sent to clients.", m.bytes_out),
            ("synk_store_messages", "Messages received from the store.", m.store_messages),
            ("synk_slow_client_resyncs", "Backlogs discarded and re-snapshotted for slow clients.", m.slow_resyncs),
            ("synk_slow_client_closes", "Clients closed for staying too slow.", m.slow_closes),
            ("synk_store_reconnects", "Times the store subscription was re-established.", m.store_reconnects),
        ):
            yield CounterMetricFamily(name, help_, value=value)  # prometheus_client adds _total
        errors = CounterMetricFamily("synk_errors", "Error messages sent to clients, by code.", labels=["code"])
        for code, n in sorted(m.errors.items()):
            errors.add_metric([code], n)
        yield errors
        for histogram in (m.delivery, *m.extra):
            yield HistogramMetricFamily(histogram.name, histogram.help, buckets=histogram.cumulative(), sum_value=histogram.total)
