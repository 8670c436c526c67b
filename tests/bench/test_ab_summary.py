"""bench/ab.py's summary: per-server medians and pooled percentiles, per-round ratios b / a."""

from __future__ import annotations

from bench.ab import Slice, summary


def test_ratios_are_taken_per_round_and_counted_by_direction():
    slices = [
        # round 0: b starts 20 % more; the one slow start of each lies beyond the p99 of 200
        Slice("a", 0, 100, 1.0, [10.0] * 99 + [400.0]),
        Slice("b", 0, 120, 1.0, [10.0] * 99 + [200.0]),
        Slice("b", 0, 120, 1.0, [10.0] * 100),
        Slice("a", 0, 100, 1.0, [10.0] * 100),
        # round 1: the machine slowed down for both; b still ahead on the rate, behind on the p99
        Slice("a", 1, 50, 1.0, [20.0] * 100),
        Slice("b", 1, 55, 1.0, [30.0] * 100),
        Slice("b", 1, 55, 1.0, [30.0] * 100),
        Slice("a", 1, 50, 1.0, [20.0] * 100),
    ]
    result = summary(slices)
    assert [round(r["rate_ratio"], 3) for r in result["rounds"]] == [1.2, 1.1]
    assert [round(r["p99_ratio"], 3) for r in result["rounds"]] == [1.0, 1.5]
    assert (result["rate_b_higher"], result["p99_b_lower"]) == (2, 0)
    assert round(result["rate_ratio_median"], 3) == 1.15
    assert result["servers"]["a"]["rate_median"] == 75.0
    assert result["servers"]["b"]["rates"] == [120.0, 120.0, 55.0, 55.0]
