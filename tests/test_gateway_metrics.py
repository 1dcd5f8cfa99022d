"""metrics.Metrics.render(): the Prometheus text exposition format."""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families

from synk.gateway.metrics import Metrics

_SAMPLE = re.compile(r'^(synk_[a-z_]+)(\{code="[a-z_]+"\})? (\d+)$')

NAMES = {
    "synk_clients": "gauge",
    "synk_subscribed_keys": "gauge",
    "synk_messages_in_total": "counter",
    "synk_bytes_in_total": "counter",
    "synk_messages_out_total": "counter",
    "synk_bytes_out_total": "counter",
    "synk_store_messages_total": "counter",
    "synk_slow_client_resyncs_total": "counter",
    "synk_slow_client_closes_total": "counter",
    "synk_store_reconnects_total": "counter",
    "synk_errors_total": "counter",
}


HISTOGRAMS = {"synk_delivery_seconds"}


def parse(text: str) -> tuple[dict[str, str], dict[str, int]]:
    """(type of each metric, value of each counter and gauge sample); the text must parse
    with prometheus_client's own parser, every line of it."""
    assert text.endswith("\n")
    families = list(text_string_to_metric_families(text))
    assert {f.name for f in families} >= {n.removesuffix("_total") for n in NAMES} | HISTOGRAMS
    types: dict[str, str] = {}
    helps: set[str] = set()
    samples: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_ = line[7:].partition(" ")
            assert help_, line
            helps.add(name)
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert kind in ("gauge", "counter", "histogram"), line
            assert name not in types, f"{name} typed twice"
            types[name] = kind
        elif not any(line.startswith(h) for h in HISTOGRAMS):
            m = _SAMPLE.match(line)
            assert m is not None, f"not a sample line: {line!r}"
            assert m.group(1) in types, f"sample before its TYPE: {line!r}"
            samples[m.group(1) + (m.group(2) or "")] = int(m.group(3))
    assert helps == set(types)
    return {k: v for k, v in types.items() if k not in HISTOGRAMS}, samples


def test_every_metric_starts_at_zero() -> None:
    types, samples = parse(Metrics().render())
    assert types == NAMES
    assert samples == {name: 0 for name in NAMES if name != "synk_errors_total"}


def test_values_and_error_codes() -> None:
    m = Metrics(clients=3, keys=2, messages_in=10, bytes_in=400, messages_out=7, bytes_out=900)
    m.store_messages, m.slow_resyncs, m.slow_closes, m.store_reconnects = 11, 1, 2, 4
    m.errors["rate_limited"] += 2
    m.errors["bad_json"] += 1
    lines = m.render().splitlines()
    _, samples = parse(m.render())
    assert samples == {
        "synk_clients": 3,
        "synk_subscribed_keys": 2,
        "synk_messages_in_total": 10,
        "synk_bytes_in_total": 400,
        "synk_messages_out_total": 7,
        "synk_bytes_out_total": 900,
        "synk_store_messages_total": 11,
        "synk_slow_client_resyncs_total": 1,
        "synk_slow_client_closes_total": 2,
        "synk_store_reconnects_total": 4,
        'synk_errors_total{code="bad_json"}': 1,
        'synk_errors_total{code="rate_limited"}': 2,
    }
    # error codes in a stable (sorted) order
    errors = [line for line in lines if line.startswith("synk_errors_total{")]
    assert errors == ['synk_errors_total{code="bad_json"} 1', 'synk_errors_total{code="rate_limited"} 2']


def test_render_reflects_changes() -> None:
    m = Metrics()
    m.clients += 1
    m.errors["internal"] += 1
    _, samples = parse(m.render())
    assert samples["synk_clients"] == 1
    assert samples['synk_errors_total{code="internal"}'] == 1
    m.clients -= 1
    assert parse(m.render())[1]["synk_clients"] == 0


def test_error_codes_are_escaped_as_label_values() -> None:
    # A handler's ProtocolError may carry any code; the exposition must stay parseable.
    m = Metrics()
    m.errors['a"b\\c\nd'] += 1
    [line] = [line for line in m.render().splitlines() if line.startswith("synk_errors_total{")]
    assert line == 'synk_errors_total{code="a\\"b\\\\c\\nd"} 1'


def test_the_delivery_histogram_counts_in_cumulative_buckets() -> None:
    m = Metrics()
    for seconds in (0.0002, 0.003, 0.003, 0.2, 30.0):
        m.delivery.observe(seconds)
    [family] = [f for f in text_string_to_metric_families(m.render()) if f.name == "synk_delivery_seconds"]
    buckets = {s.labels["le"]: s.value for s in family.samples if s.name.endswith("_bucket")}
    assert (buckets["0.0005"], buckets["0.0025"], buckets["0.005"], buckets["0.25"], buckets["10"], buckets["+Inf"]) == (1, 1, 3, 4, 4, 5)
    [count] = [s.value for s in family.samples if s.name.endswith("_count")]
    [total] = [s.value for s in family.samples if s.name.endswith("_sum")]
    assert count == 5 and abs(total - 30.2062) < 1e-6


def test_the_prometheus_client_collector_reports_the_same() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from synk.gateway.metrics import PrometheusCollector

    m = Metrics(clients=2, messages_out=9)
    m.errors["forbidden"] += 3
    m.delivery.observe(0.004)
    registry = CollectorRegistry()
    registry.register(PrometheusCollector(m))
    text = generate_latest(registry).decode()
    assert "synk_clients 2.0" in text
    assert "synk_messages_out_total 9.0" in text
    assert 'synk_errors_total{code="forbidden"} 3.0' in text
    assert 'synk_delivery_seconds_bucket{le="0.005"} 1.0' in text
    assert "synk_delivery_seconds_count 1.0" in text


async def test_loop_stalls_and_full_collections_are_measured() -> None:
    import asyncio
    import gc
    import time

    from synk.gateway import Gateway
    from tests.gateway_env import until

    gateway = Gateway("memory://")
    await gateway.start()
    try:
        pauses = gateway.pauses
        await until(lambda: pauses.lag.count >= 2, "the lag probe to run")
        assert pauses.lag.counts[-1] == 0
        # A callback that holds the loop for 0.3 s (the stall under test, not a wait): the
        # probe due meanwhile runs that late.
        stalled = asyncio.get_running_loop().create_future()

        def hog() -> None:
            time.sleep(0.3)
            stalled.set_result(None)

        asyncio.get_running_loop().call_soon(hog)
        await stalled
        # The probe due within the stall ran at least 0.2 s late: a count above 0.1 s
        # (bucket i counts the values up to bounds[i], above bounds[i - 1]).
        await until(lambda: sum(pauses.lag.counts[pauses.lag.bounds.index(0.25) :]) >= 1, "the stall to be recorded")
        before = pauses.gc.count
        gc.collect()  # a full collection
        assert pauses.gc.count == before + 1
        text = gateway.metrics.render()
        assert "synk_loop_lag_seconds_count" in text and "synk_gc_seconds_count" in text
    finally:
        await gateway.close()
    # Closed: the collector callback is gone.
    count = gateway.pauses.gc.count
    gc.collect()
    assert gateway.pauses.gc.count == count
