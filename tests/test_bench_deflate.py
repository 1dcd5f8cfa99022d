"""``python -m bench.deflate`` runs and measures what permessage-deflate would save on synk's stream."""

from __future__ import annotations

from tests.test_bench import run_bench


def test_bench_deflate_prints_savings_cost_and_memory_per_setting() -> None:
    line = run_bench("bench.deflate", ["--messages", "2000", "--per-frame", "1,10"])
    assert line["bench"] == "deflate" and len(line["rows"]) == 12
    for row in line["rows"]:
        # JSON mods compress: the field names repeat in every message. (A compact
        # mod alone, deflated without the context of earlier frames, may not.)
        if row["encoding"] == "json":
            assert 0 < row["deflated_bytes_per_message"] < row["bytes_per_message"]
        assert row["cpu_us_per_message"] > 0 and row["compressor_kb"] in (32, 256)
    rows = {(r["encoding"], r["setting"], r["per_frame"]): r for r in line["rows"]}
    takeover = {n: rows["json", "zlib default, takeover", n]["deflated_bytes_per_message"] for n in (1, 10)}
    assert takeover[10] < takeover[1]  # a batch frame compresses better than a message alone
    # Compact mods are far smaller than JSON ones, and stay smaller compressed.
    for n in (1, 10):
        json_row, compact_row = rows["json", "zlib default, takeover", n], rows["compact", "zlib default, takeover", n]
        assert compact_row["bytes_per_message"] < 0.5 * json_row["bytes_per_message"]
        assert compact_row["deflated_bytes_per_message"] < json_row["deflated_bytes_per_message"]
