"""The Colyseus anchor still runs: a tiny fan-out, both rows, end to end (Node; ``npm ci`` on first use)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("node") is None or shutil.which("npm") is None, reason="needs node and npm")

#: 20 clients, each seeing 2 of 10 keys (4 clients a key), 5 objects a key, 100 changes/s, a 1 s window
TINY = ["--clients", "20", "--keys", "10", "--keys-per-client", "2", "--objects-per-key", "5", "--rate", "100"]
TINY += ["--seconds", "1", "--warmup", "0.5"]


def run_bench(args: list[str], timeout: float = 240) -> dict[str, Any]:
    """``python -m bench.colyseus args``, which must exit 0; its last stdout line (the JSON line), parsed."""
    result = subprocess.run(
        [sys.executable, "-m", "bench.colyseus", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line: dict[str, Any] = orjson.loads(result.stdout.strip().splitlines()[-1])
    return line


def test_bench_colyseus_runs_both_rows_and_delivers_everything() -> None:
    line = run_bench(TINY)
    assert (line["bench"], line["clients"], line["rates"]) == ("colyseus", 20, [100.0])
    rows = {row["mode"]: row for row in line["rows"]}
    assert set(rows) == {"view", "no-view"}
    # With views a change reaches the 4 clients of its key; without, all 20: 400 and 2,000 updates a second.
    assert 300 <= rows["view"]["expected_per_s"] <= 500
    assert 1500 <= rows["no-view"]["expected_per_s"] <= 2500
    for mode, row in rows.items():
        # (the window's edges make delivered and expected differ by a few)
        assert row["delivered"] > 0.8 * row["expected"] > 0, mode
        assert (row["client_errors"], row["closed_clients"], row["unparsed_patches"]) == ([], 0, 0), mode
        assert row["server_cpu_s"] >= 0 and row["server_rss_mb"] > 0 and row["bytes_per_client_per_s"] > 0, mode
        # patches every 50 ms: a change waits at most one patch interval, and the clients see it soon after
        assert 0 < row["p50_ms"] <= row["p99_ms"], mode
        assert 0 <= row["machine_busy_pct"] <= 100, mode
    # the no-view row gets every change: about 5x the bytes of a client seeing 2 of 10 keys
    assert rows["no-view"]["bytes_per_client_per_s"] > 2 * rows["view"]["bytes_per_client_per_s"]


@pytest.mark.parametrize("client", ["changes", "listen"])
def test_bench_colyseus_steps_through_rates_with_colyseus_js_clients(client: str) -> None:
    line = run_bench([*TINY, "--only", "view", "--rates", "50,100", "--client", client, "--client-procs", "1"])
    assert [(row["mode"], row["rate"]) for row in line["rows"]] == [("view", 50.0), ("view", 100.0)]
    for row in line["rows"]:
        assert row["delivered"] > 0.8 * row["expected"] > 0, row["rate"]
        assert row["client_errors"] == [], row["rate"]
    assert line["rows"][1]["expected_per_s"] > 1.5 * line["rows"][0]["expected_per_s"]


def test_bench_fanout_runs_colyseus_beside_synk_and_judges_target_7_on_the_same_run() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.fanout", *TINY, "--only", "synk,floor,colyseus", "--synk-variants", "batch+compact"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line: dict[str, Any] = orjson.loads(result.stdout.strip().splitlines()[-1])
    assert line["rows"] == ["synk batch compact", "floor batch", "colyseus"]
    # Every row had the same workload: 4 clients a key, 100 changes/s, so about 400 client updates a second each.
    for name in line["rows"]:
        row = line[name]
        assert row["delivered"] > 0.8 * row["expected"] > 0, name
        assert 300 <= row["delivered_per_s"] <= 500 and row["client_errors"] == [], name
    # Colyseus sends a patch every 50 ms, and its clients count the bytes of every frame.
    assert line["colyseus"]["bytes_per_client_s"] > 0 and line["colyseus"]["p50_ms"] > 0
    ratio = line["vs_colyseus"]["synk batch compact"]["cpu"]
    expected = line["synk batch compact"]["cpu_s_per_million"] / line["colyseus"]["cpu_s_per_million"]
    assert abs(ratio["median"] - expected) < 0.01 and ratio["met"] == (ratio["median"] <= 0.5)
    assert line["targets_met"]["cpu_vs_colyseus_le_0.5_synk batch compact"] == ratio["met"]
    # the floor's ratio is printed as the bound, never judged as a target
    assert "floor batch" in line["vs_colyseus"] and not any(k.endswith("floor batch") for k in line["targets_met"])
    assert "bound of target 7, floor batch" in result.stdout
