"""``python -m bench.deflate`` runs and measures what permessage-deflate would save on synk's stream."""

from __future__ import annotations

from tests.test_bench import run_bench


def test_bench_deflate_prints_savings_cost_and_memory_per_setting() -> None:
    line = run_bench("bench.deflate", ["--messages", "2000", "--per-frame", "1,10"])
    assert line["bench"] == "deflate" and len(line["rows"]) == 6
    for row in line["rows"]:
        # JSON mods compress: the field names repeat in every message.
        assert 0 < row["deflated_bytes_per_message"] < row["bytes_per_message"]
        assert row["cpu_us_per_message"] > 0 and row["compressor_kb"] in (32, 256)
    takeover = {r["per_frame"]: r["deflated_bytes_per_message"] for r in line["rows"] if r["setting"] == "zlib default, takeover"}
    assert takeover[10] < takeover[1]  # a batch frame compresses better than a message alone
