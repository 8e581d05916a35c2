"""tools/measurements.py: the README's numbers come from recorded runs, never from typing."""

from __future__ import annotations

import pytest

from tools import measurements

LOG = """setup: ok (ansible [core 2.19.14])
local-env: docker: up in 2.0s
local-env: base-images: up in 91.4s
local-env: kubernetes: up in 901.3s
local-env: node: up in 380.0s
local-env: all up in 1380.2s; endpoints in .local/endpoints.yml
ci: make demo finished after 1512s
==> [lint] 02:40:00 started
<== [lint] ok in 41s
<== [integration] ok in 1422s
<== [faults] ok in 298s
local-env: kubernetes: up in 1.1s
ci: make demo + make test finished in 3500s
"""


def test_a_ci_log_becomes_a_record_and_a_readme_row() -> None:
    run = measurements.parse_log(LOG, "cold", "abc1234", "2026-12-02")
    assert run["demo"] == 1512 and run["test"] == 3500 - 1512 and run["total"] == 3500
    assert run["local_up"] == {"docker": 2.0, "base-images": 91.4, "kubernetes": 901.3, "node": 380.0, "total": 1380.2}
    assert run["stages"] == {"lint": 41, "integration": 1422, "faults": 298}
    text = measurements.table({"ci_run": {"cold": run}})
    assert "brand-new machine" in text
    assert "total 58 min 20 s" in text and "integration 1422 s" in text and "commit abc1234, 2026-12-02" in text


def test_an_unfinished_run_is_refused() -> None:
    with pytest.raises(SystemExit, match=r"not a complete, passing \.ci/run"):
        measurements.parse_log(LOG.split("ci: make demo + make test", maxsplit=1)[0], "cold", "abc1234", "2026-12-02")


def test_the_readme_block_is_replaced_and_nothing_else() -> None:
    readme = (
        f"intro\n{measurements.BEGIN}\nold typed numbers\n{measurements.END}\n"
        f"{measurements.COMPONENTS_BEGIN}\n{measurements.COMPONENTS_END}\n"
        f"{measurements.BENCH_BEGIN}\n{measurements.BENCH_END}\noutro\n"
    )
    bench = {"rows": {"warm bring-up": "14.7 s"}, "commit": "c0ffee0", "finished": "2026-12-02"}
    out = measurements.render_readme(readme, {"bench_localenv": bench})
    assert out.startswith("intro\n") and out.endswith("\noutro\n")
    assert "old typed numbers" not in out
    assert "| warm bring-up | 14.7 s - commit c0ffee0, 2026-12-02 |" in out


def test_the_bench_table_comes_from_benchlib_rows() -> None:
    from tools import benchlib

    rows = [
        benchlib.row("no-op deploy", [3.0, 2.0, 4.0], "kubectl", [1.0, 1.5, 2.0], max_ratio=2.0),
        benchlib.row("no-op demo", [20.0, 21.0], below=15),
        benchlib.row("memory", [900.0], below=8192, unit="MiB"),
    ]
    assert rows[0]["median"] == 3.0 and rows[0]["baseline_median"] == 1.5 and rows[0]["ratio"] == 2.0
    assert rows[0]["met"] is True and rows[1]["met"] is False and rows[2]["met"] is True
    readme = (
        f"{measurements.BEGIN}\n{measurements.END}\n{measurements.COMPONENTS_BEGIN}\n{measurements.COMPONENTS_END}\n"
        f"{measurements.BENCH_BEGIN}\nold\n{measurements.BENCH_END}\n"
    )
    out = measurements.render_readme(readme, {"bench": {"rows": rows, "commit": "c0ffee0", "finished": "2026-12-02"}})
    assert "| no-op deploy (3 runs) | 3.00 s | kubectl | 1.50 s | 2.00 | ratio <= 2 | yes |" in out
    assert "| no-op demo (2 runs) | 20.50 s | - | - | - | < 15 s | **no** |" in out
    assert "| memory (1 runs) | 900 MiB |" in out and "\nold\n" not in out


def test_a_run_with_a_failed_stage_is_recorded_as_such() -> None:
    log = LOG.replace("ci: make demo + make test finished in 3500s\n", "make test finished in 1988s; failed: sanity\n")
    run = measurements.parse_log(log, "cold", "abc1234", "2026-12-02")
    assert run["total"] == 1512 + 1988 and run["failed"] == ["sanity"]
    run["note"] = "sanity fixed later"
    assert "sanity FAILED" in measurements.table({"ci_run": {"cold": run}})
    assert "(sanity fixed later)" in measurements.table({"ci_run": {"cold": run}})


def test_component_starts_include_the_wait_for_their_go_build() -> None:
    cold = {"commit": "c0ffee0", "local_up": {"kubernetes": 5.0, "kubernetes build wait": 600.4, "docker": 1.25}}
    warm = {"commit": "beef123", "local_up": {"kubernetes": 4.5, "docker": 1.0}}
    table = measurements.components_table({"ci_run": {"cold": cold, "warm": warm}})
    assert "| component | cold start (c0ffee0) | warm start (beef123) |" in table
    assert "| kubernetes | 605 s (of which 600 s waiting for its Go build) | 4.5 s |" in table
    assert "| docker | 1.2 s | 1.0 s |" in table
    assert "| acme | - | - |" in table
