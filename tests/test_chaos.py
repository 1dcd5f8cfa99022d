"""The chaos harness (``python -m bench.chaos``): its mirror/store comparison, and a short seeded run end to end."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench.chaos.__main__ import longest_common_gap, parse_args
from bench.chaos.compare import compare
from bench.chaos.redis_ctl import StoredObject, parse_value

ROOT = Path(__file__).resolve().parents[1]

needs_processes = pytest.mark.skipif(
    shutil.which("redis-server") is None or shutil.which("node") is None, reason="needs redis-server and node"
)

STORE = {
    "a": StoredObject("zone:1", 3, "i-a", {"n": 2}),
    "b": StoredObject("zone:2", 1, "i-b", {"n": 0}),
    "c": StoredObject("zone:3", 5, "i-c", {"n": 4}),
}


def report(keys: list[str], objects: dict[str, list[Any]], size: int | None = None) -> dict[str, Any]:
    return {"keys": keys, "objects": objects, "size": len(objects) if size is None else size}


def test_a_mirror_equal_to_the_store_over_its_keys_does_not_diverge() -> None:
    # "c" is in a key the client does not follow: none of its business.
    d = compare(STORE, report(["zone:1", "zone:2"], {"a": ["zone:1", 3, "i-a", {"n": 2}], "b": ["zone:2", 1, "i-b", {"n": 0}]}))
    assert (d.missing, d.extra, d.wrong, d.total) == (0, 0, 0, 0)


def test_missing_extra_and_wrong_are_counted_apart() -> None:
    mirror = {
        "a": ["zone:1", 2, "i-a", {"n": 1}],  # an old version
        "c": ["zone:1", 5, "i-c", {"n": 4}],  # stored in zone:3, which the client does not follow
        "z": ["zone:2", 1, "i-z", {}],  # not stored at all
    }
    d = compare(STORE, report(["zone:1", "zone:2"], mirror))
    assert (d.missing, d.extra, d.wrong) == (1, 2, 1)  # b missing; c and z extra; a wrong
    assert {kind for kind, *_ in d.examples} == {"missing", "extra", "wrong"}


def test_another_incarnation_or_state_is_wrong_and_unlisted_objects_are_extra() -> None:
    d = compare(STORE, report(["zone:1"], {"a": ["zone:1", 3, "i-other", {"n": 2}]}, size=3))
    assert (d.missing, d.extra, d.wrong) == (0, 2, 1)
    d = compare(STORE, report(["zone:1"], {"a": ["zone:1", 3, "i-a", {"n": 9}]}))
    assert d.wrong == 1


def test_a_stored_value_is_parsed_as_the_guard_line_and_the_add_message() -> None:
    value = b'tok123:7\n{"method":"add","t":"thing","id":"x1","sKey":"zone:4","v":7,"state":{"k":4,"n":6},"i":"tok123"}'
    assert parse_value("zone:4", "x1", value) == StoredObject("zone:4", 7, "tok123", {"k": 4, "n": 6})
    with pytest.raises(ValueError, match="naming"):
        parse_value("zone:5", "x1", value)
    assert parse_value("zone:4", "x1", b"tok123:8\n>zone:5\n" + value.split(b"\n", 1)[1]) is None  # a move's mark


def test_the_longest_common_gap_is_time_no_client_process_received_anything() -> None:
    # Process A heard nothing in 1000-3000 ms, B in 2000-2500 and 2800-4000: together, 2000-2500 and 2800-3000.
    a = {"since": 0, "gaps": [[1000, 3000]]}
    b = {"since": 0, "gaps": [[2000, 2500], [2800, 4000]]}
    assert longest_common_gap([a, b], since=0) == pytest.approx(0.5)
    # A process started late (a client-kill's replacement) knew nothing before it started.
    late = {"since": 1500, "gaps": []}
    assert longest_common_gap([a, late], since=0) == pytest.approx(0.5)
    assert longest_common_gap([], since=0) == 0.0


def test_faults_that_need_one_redis_are_refused_on_the_cluster_and_cluster_faults_without_it(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, why in (
        (["--cluster", "--faults", "gateway-kill,net-cut"], "net-cut need one Redis"),
        (["--faults", "reshard"], "need --cluster"),
    ):
        with pytest.raises(SystemExit):
            parse_args(argv)
        assert why in capsys.readouterr().err
    assert "redis-kill" not in parse_args(["--cluster"]).faults and "primary-kill" in parse_args(["--cluster"]).faults
    assert "primary-kill" not in parse_args([]).faults and "redis-kill" in parse_args([]).faults


def chaos(args: list[str], timeout: float) -> tuple[dict[str, Any], subprocess.CompletedProcess[str]]:
    """Run ``python -m bench.chaos`` with ``args``; its JSON line (the harness itself must not have failed), and the process."""
    result = subprocess.run(
        [sys.executable, "-m", "bench.chaos", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    line: dict[str, Any] = orjson.loads(result.stdout.strip().splitlines()[-1])
    assert line["bench"] == "chaos" and line["error"] is None, result.stderr[-3000:]
    return line, result


def assert_converged(line: dict[str, Any], result: subprocess.CompletedProcess[str]) -> None:
    """Every storm: 0 divergent objects, every owned object stored as its simulation believes, no write applied twice or lost."""
    log = result.stdout[-3000:] + result.stderr[-6000:]
    for storm in line["results"]:
        assert storm["sim_lost"] == storm["sim_wrong"] == 0 and storm["sim"]["doubled"] == 0, log
        # An acknowledged write lost (only a wiped store may): on a cluster, what a
        # failover did before each primary's batch waited for a replica (WAIT).
        assert storm["sim"]["acked_lost"] == 0 or "redis-wipe" in storm["faults"], log
        assert storm["converge_s"] is not None and not (storm["missing"] or storm["extra"] or storm["wrong"]), log


def assert_store_sound(line: dict[str, Any], result: subprocess.CompletedProcess[str]) -> None:
    """The store invariant held after every storm, and the run exited 0."""
    log = result.stdout[-3000:] + result.stderr[-6000:]
    broken = [v for storm in line["results"] for v in storm["invariant"]]
    assert broken == [], log
    assert result.returncode == 0, log


@needs_processes
def test_a_short_seeded_storm_run_converges() -> None:
    # Each storm draws its faults from this list (seeded), over 12 clients and 2 gateways.
    args = ["--storms", "3", "--seed", "7", "--duration", "8", "--clients", "12", "--client-procs", "2", "--gateways", "2"]
    args += [
        "--faults",
        "redis-kill,redis-stop,gateway-kill,client-stall,client-slow,pubsub-kill,net-cut,net-stall",
        "--converge-timeout",
        "20",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "bench.chaos", *args], cwd=ROOT, capture_output=True, text=True, timeout=170, check=False
    )
    line = orjson.loads(result.stdout.strip().splitlines()[-1])
    assert line["bench"] == "chaos" and line["error"] is None, result.stderr[-3000:]
    assert line["storms"] == 3 and all(r["clients"] == 12 for r in line["results"])
    assert_converged(line, result)
    assert_store_sound(line, result)


# -- on a Redis Cluster (3 primaries, 3 replicas) -------------------------------------------------

CLUSTER = ["--cluster", "--clients", "8", "--client-procs", "2", "--gateways", "2", "--converge-timeout", "20"]


@needs_processes
def test_a_primary_failover_storm_on_the_cluster_converges_and_the_simulation_recovers_through_reload() -> None:
    # One primary killed (-9) while the simulation writes and clients on both gateways watch
    # keys on every node; its replica is promoted, the old node comes back as a replica.
    line, result = chaos([*CLUSTER, "--storms", "1", "--seed", "3", "--duration", "6", "--faults", "primary-kill"], timeout=120)
    [storm] = line["results"]
    assert storm["faults"] == ["primary-kill"]
    assert_converged(line, result)
    assert_store_sound(line, result)
    # The simulation's flushes failed during the failover (WriteError), and reload() brought it back.
    assert storm["sim"]["failed_flushes"] >= 1 and storm["sim"]["reloads"] >= 1, result.stderr[-3000:]
    assert storm["sim"]["ticks"] > 0 and storm["write_outage_s"] > 0
    # The interruption is measured and printed (not bounded here: no timed assertions).
    assert "writes out s" in result.stdout and "no delivery s" in result.stdout
    assert storm["delivery_gap_s"] >= 0
    # The gateways stayed up: their clients did not reconnect.
    assert storm["reconnects"] == 0, result.stderr[-3000:]


@needs_processes
def test_a_reshard_storm_on_the_cluster_converges_without_reconnects_and_loses_or_doubles_no_write() -> None:
    # Two slots of subscribed keys move to another primary while the simulations write them
    # (one of the moves held half-way, so that writes meet ASK and TRYAGAIN).
    args = [*CLUSTER, "--storms", "1", "--seed", "5", "--duration", "6", "--faults", "reshard", "--faults-per-storm", "2", "--sims", "2"]
    line, result = chaos(args, timeout=120)
    [storm] = line["results"]
    assert storm["faults"] == ["reshard", "reshard"]
    assert storm["reconnects"] == 0, result.stderr[-3000:]
    # No acknowledged write was lost and none applied twice.
    assert storm["sim"]["acked_lost"] == storm["sim"]["doubled"] == 0, result.stderr[-3000:]
    assert_converged(line, result)
    assert_store_sound(line, result)
    # No object was lost either (reload() reports the object of a move left half-way missing).
    assert storm["sim"]["lost"] == 0, result.stderr[-3000:]


@needs_processes
def test_a_mixed_storm_with_two_simulations_and_two_gateways_on_the_cluster_converges() -> None:
    # Seed 18 draws, in one 10 s storm: a primary failover, a slow client, a reshard and a gateway kill.
    args = [*CLUSTER, "--storms", "1", "--seed", "18", "--duration", "10", "--faults-per-storm", "4", "--sims", "2"]
    args += ["--faults", "primary-kill,reshard,gateway-kill,client-kill,client-stall,client-slow,pubsub-kill"]
    line, result = chaos(args, timeout=150)
    [storm] = line["results"]
    assert {"primary-kill", "reshard", "gateway-kill"} <= set(storm["faults"])
    assert_converged(line, result)
    assert_store_sound(line, result)
