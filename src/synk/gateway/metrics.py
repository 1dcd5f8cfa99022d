"""Gateway counters, rendered in the Prometheus text format (pure)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["Metrics"]


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
        return "\n".join(lines) + "\n"
