"""Statistics and threshold decisions of the load generator, without any network."""

from __future__ import annotations

import pytest

from ansible_collections.thinkus.ops.plugins.module_utils._loadtest import (
    Sample,
    percentile,
    summarise,
    threshold_breaches,
)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 99) == 0.0
    with pytest.raises(ValueError):
        percentile(values, 0)


def test_summarise_counts_errors_and_latency() -> None:
    samples = [Sample("a", 0.010, True, 200)] * 98 + [Sample("a", 2.0, False, 500), Sample("a", 0.5, False, 0)]
    stats = summarise(samples, wall_seconds=2.0)
    assert stats["requests"] == 100
    assert stats["errors"] == 2
    assert stats["error_rate_pct"] == 2.0
    assert stats["p50_ms"] == 10.0
    assert stats["p99_ms"] == 500.0
    assert stats["max_ms"] == 2000.0
    assert stats["rps"] == 50.0


def test_threshold_breaches_name_the_value_and_the_limit() -> None:
    stats = {"p99_ms": 120.0, "error_rate_pct": 1.5}
    assert threshold_breaches(stats, 200, 2, "overall") == []
    assert threshold_breaches(stats, None, None, "overall") == []
    assert threshold_breaches(stats, 100, 1, "overall") == [
        "overall: p99 120.0 ms exceeds the threshold of 100 ms",
        "overall: error rate 1.5% exceeds the threshold of 1%",
    ]
