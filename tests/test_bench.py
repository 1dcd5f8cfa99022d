"""The benchmarks still run: tiny versions of each, end to end, against their own redis-server (or cluster)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
#: the fan-out runs' workload: 20 clients, 100 changes/s, a 1 s window
FANOUT = [
    "--clients",
    "20",
    "--keys",
    "10",
    "--keys-per-client",
    "2",
    "--objects-per-key",
    "5",
    "--rate",
    "100",
    "--seconds",
    "1",
    "--warmup",
    "0.5",
]


def run_bench(module: str, args: list[str], timeout: float = 300) -> dict[str, Any]:
    """Run ``python -m module args``, which must exit 0; its last line (the JSON line), parsed."""
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    line: dict[str, Any] = orjson.loads(result.stdout.strip().splitlines()[-1])
    return line


def test_bench_flush_runs_and_prints_its_json_line() -> None:
    line = run_bench("bench.flush", ["--objects", "300", "--keys", "4", "--ticks", "3", "--naive-ticks", "1", "--move-fraction", "0.1"])
    assert (line["bench"], line["objects"], line["ticks"]) == ("flush", 300, 3)
    # every variant ran, the guarded replay included (it exits non-zero unless every operation applied)
    for name in ("synk", "naive", "raw", "raw_guarded", "naive_lean"):
        assert line["cpu_us_per_write"][name]["redis"] > 0, name
    assert line["synk_subscribed_writes_per_s"] > 0 and line["raw_guarded_writes_per_s"] > 0
    assert set(line["targets_met"]) == {
        "synk_ge_20x_naive",
        "synk_ge_100000_writes_per_s",
        "synk_ge_0.5_of_raw",
        "synk_ge_0.75_of_raw_guarded",
    }
    # the bounds on target 9: planning before sending (a share of the replay, so under 1), and synk's CPU per write
    assert 0 < line["plan_bound_of_raw_guarded"] < 1 and line["cpu_bound_of_raw_guarded"] > 0


def test_bench_hotpath_measures_every_variant_and_delivers_every_message() -> None:
    line = run_bench("bench.hotpath", ["--clients", "50", "--ticks", "20", "--repeat", "1"])
    assert line["bench"] == "hotpath"
    for variant in ("json", "batch", "batch+compact"):
        # each of the 200 messages reaches the sessions on its key (50 sessions on 10 of 100 keys: 5 a key, on average)
        assert line[variant]["deliveries"] > 0 and line[variant]["us_per_delivery"] > 0, variant
        assert line[variant]["msgs_per_write"] >= 1.0, variant
    assert line["json"]["deliveries"] == line["batch"]["deliveries"] == line["batch+compact"]["deliveries"]


def test_bench_fanout_runs_both_servers_and_delivers_everything() -> None:
    line = run_bench("bench.fanout", FANOUT)
    assert (line["bench"], line["clients"]) == ("fanout", 20)
    for system in ("synk", "socketio"):
        # (the window's edges make delivered and expected differ by a few)
        assert line[system]["delivered"] > 0.8 * line[system]["expected"] > 0, system
        assert line[system]["client_errors"] == [], system
    assert set(line["targets_met"]) == {"cpu_per_msg_at_most_third_of_socketio", "synk_p99_under_50ms"}
    # synk's stalls over the window, from its own /metrics: the lag probe ran (every 0.1 s)
    pauses = line["synk"]["pauses"]
    assert pauses["lag_probes"] >= 5 and pauses["lag_over_50ms"] >= 0 and pauses["full_gcs"] >= 0


def test_bench_fanout_compares_one_worker_with_two() -> None:
    line = run_bench("bench.fanout", [*FANOUT, "--only", "synk", "--workers", "1,2"])
    for name in ("synk", "synk_2_workers"):
        assert line[name]["delivered"] > 0.8 * line[name]["expected"] > 0, name
        assert line[name]["client_errors"] == [], name
        assert line[name]["server_cpu_s"] > 0, name  # summed over the workers
    assert set(line["synk_2_workers_vs_one"]) == {"delivered", "p99", "cpu_per_delivery"}


def test_bench_fanout_batch_frames_floor_and_asgi_rows_deliver_everything() -> None:
    # 4 keys, each client on 2: a tick (4 changes) brings a client 2 messages on average, one write
    workload = [*FANOUT, "--keys", "4", "--rate", "200"]
    variants = ["--synk-variants", "plain,batch+wi20", "--only", "synk,synk-asgi,floor"]
    line = run_bench("bench.fanout", [*workload, *variants])
    names = ["synk", "synk batch wi=0.02", "synk-asgi", "synk-asgi batch wi=0.02", "floor", "floor batch"]
    assert line["rows"] == names
    for name in names:
        row = line[name]
        assert row["delivered"] > 0.8 * row["expected"] > 0, name
        assert (row["client_errors"], row["closed_clients"]) == ([], 0), name
        assert row["bytes_per_client_s"] > 0 and row["server_cpu_s"] >= 0, name
        if "batch" in name:  # several messages to a frame: fewer frames than messages
            assert 0 < row["frames"] < 0.8 * row["delivered"], name
        else:  # one message to a frame
            assert row["frames"] >= 0.95 * row["delivered"], name
    assert set(line["cpu_per_delivery_vs_synk"]) == set(names[1:])


def test_bench_fanout_sweep_finds_the_rates_and_plots_them(tmp_path: Path) -> None:
    plot = tmp_path / "sweep.png"
    sweep = ["--sweep", "--sweep-from", "100", "--sweep-to", "400", "--sweep-seconds", "1", "--sweep-warmup", "0.3"]
    line = run_bench("bench.fanout", [*FANOUT, "--only", "floor,synk", *sweep, "--sweep-refine", "1", "--plot", str(plot)])
    assert (line["bench"], line["plot"]) == ("fanout-sweep", str(plot))
    assert plot.read_bytes().startswith(b"\x89PNG")
    assert set(line["rows"]) == {"floor", "synk"}
    for name, row in line["rows"].items():
        # 100-400 changes/s are 400-1,600 deliveries/s for 20 clients: both keep up (a shared
        # machine may fail a step, which ends the doubling early or adds a bisection step)
        best_50, best_100 = row["max_delivered_per_s_p99_le_50ms"], row["max_delivered_per_s_p99_le_100ms"]
        assert best_100 is not None and best_100 > 0, name
        assert best_50 is None or best_100 >= best_50, name
        rates = [step["rate"] for step in row["steps"]]
        assert rates[0] == 100.0 and len(rates) >= 2 and all(12.5 <= r <= 400 for r in rates), name
        assert all(step["cpu_s_per_million"] >= 0 and step["p99_ms"] > 0 for step in row["steps"]), name


def test_bench_fanout_repeat_judges_the_floor_and_asgi_targets_on_the_median_of_rounds() -> None:
    line = run_bench("bench.fanout", [*FANOUT, "--only", "synk,synk-asgi,floor", "--synk-variants", "resnap", "--repeat", "2"])
    assert (line["repeat"], line["rows"]) == (2, ["synk resnap", "synk-asgi resnap", "floor"])
    for name in line["rows"]:
        rounds = line[name]["rounds"]
        assert len(rounds) == 2 and all(r["cpu_s_per_million"] >= 0 and r["p99_ms"] > 0 for r in rounds), name
        # the table's figures are one of the rounds (the median one), not a blend
        assert line[name]["cpu_s_per_million"] in [r["cpu_s_per_million"] for r in rounds], name
    vs_floor = line["cpu_vs_floor"]["synk resnap"]
    assert vs_floor["min"] <= vs_floor["median"] <= vs_floor["max"] and vs_floor["met"] == (vs_floor["median"] <= 1.3)
    asgi = line["asgi_vs_serve"]["synk-asgi resnap"]
    assert set(asgi) == {"cpu", "p99"} and all(asgi[k]["met"] == (asgi[k]["median"] <= 1.3) for k in asgi)
    met = line["targets_met"]
    assert met["cpu_vs_floor_le_1.3_synk resnap"] == vs_floor["met"]
    assert met["asgi_vs_serve_le_1.3_synk-asgi resnap"] == (asgi["cpu"]["met"] and asgi["p99"]["met"])


def test_bench_fanout_at_floor_runs_synk_at_a_share_of_the_floors_saturation() -> None:
    workload = [a for a in FANOUT if a not in ("--rate", "100")]
    sweep = ["--sweep-from", "100", "--sweep-to", "400", "--sweep-seconds", "1", "--sweep-warmup", "0.3", "--sweep-refine", "1"]
    line = run_bench("bench.fanout", [*workload, "--only", "synk,floor", "--synk-variants", "plain,nofreeze", "--at-floor", "0.5", *sweep])
    assert (line["bench"], line["at_floor"]) == ("fanout-at-floor", 0.5)
    floor = line["floor"]["floor"]
    # 20 clients on 2 of 10 keys: a change makes 4 deliveries; the sweep's first step (100/s) is 400 deliveries/s
    assert floor["saturation_per_s"] >= 0.97 * 400 and floor["steps"][0]["rate"] == 100.0
    assert set(line["rows"]) == {"synk", "synk nofreeze"} == set(line["target_1"])
    for name, row in line["rows"].items():
        # it ran at half the floor's saturation, in changes a second (4 deliveries each)
        assert abs(row["sim_changes_per_s"] - 0.5 * floor["saturation_per_s"] / 4) <= 0.1 * floor["saturation_per_s"] / 4, name
        assert row["delivered"] > 0.8 * row["expected"] > 0 and row["pauses"]["lag_probes"] > 0, name
        verdict = line["target_1"][name]
        assert verdict["met"] == (verdict["p99_ms"] <= 100 and verdict["loop_stalls_over_50ms"] == 0 and verdict["kept_up"]), name


def test_bench_flush_cluster_measures_one_node_and_the_cluster_with_1_and_2_processes() -> None:
    line = run_bench("bench.flush", ["--cluster", "--objects", "200", "--keys", "9", "--ticks", "2", "--move-fraction", "0.1"], timeout=120)
    assert (line["bench"], line["primaries"]) == ("flush-cluster", 3)
    assert len(line["keys_per_node"]) == 3 and sum(line["keys_per_node"]) == 9
    assert set(line["rows"]) == {"single_1", "single_2", "cluster_1", "cluster_2", "replicated_1", "replicated_2"}
    for name, row in line["rows"].items():
        assert row["writes_per_s"] > 0, name
        # every primary is listed, and the cluster's all took some of the writes
        assert len(row["nodes"]) == (1 if name.startswith("single") else 3), name
        assert all(node["commands"] > 0 for node in row["nodes"]), name
    assert line["cluster_vs_single_1proc"] > 0 and line["replicated_vs_cluster_1proc"] > 0
    assert set(line["targets_met"]) == {"cluster_1proc_ge_0.7_of_single"}


def test_bench_fanout_cluster_runs_one_node_and_the_cluster_with_1_and_2_gateways() -> None:
    line = run_bench("bench.fanout", ["--cluster", *FANOUT], timeout=120)
    assert (line["bench"], line["primaries"]) == ("fanout-cluster", 3)
    assert len(line["keys_per_node"]) == 3 and sum(line["keys_per_node"]) == 10
    assert set(line["runs"]) == {"single-1gw", "single-2gw", "cluster-1gw", "cluster-2gw"}
    for name, run in line["runs"].items():
        assert run["delivered"] > 0.8 * run["expected"] > 0, name
        assert run["client_errors"] == [], name
        assert len(run["nodes"]) == (3 if name.startswith("cluster") else 1), name


def test_bench_idle_measures_memory_and_cpu_of_idle_clients() -> None:
    line = run_bench("bench.idle", ["--clients", "200", "--seconds", "2", "--settle", "1"], timeout=120)
    assert (line["bench"], line["clients"], line["keys"], line["ping_interval_s"]) == ("idle", 200, 100, 20.0)
    assert set(line["rows"]) == {"1_worker"}
    row = line["rows"]["1_worker"]
    assert set(row) >= {"rss_before_mb", "rss_after_mb", "kb_per_client", "cpu_pct_of_core", "subscribe_s"}
    assert row["rss_before_mb"] > 0 and row["kb_per_client"] > 0 and row["cpu_pct_of_core"] >= 0 and row["subscribe_s"] > 0
    # every client stayed connected through the window
    assert (row["closed_clients"], row["client_errors"]) == (0, [])
    assert set(line["targets_met"]) == {"kb_per_client_le_16", "cpu_le_3pct_of_core"}
    # the gateway's own stall figures since its start, from its /metrics
    assert row["pauses_since_start"]["lag_probes"] > 0 and row["pauses_since_start"]["full_gcs"] >= 0
