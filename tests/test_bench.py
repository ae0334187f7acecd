"""The benchmark harness runs (quick mode) and reports what it claims; speed itself is judged by `make bench`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from monitor.analysis import embeddings

ROOT = Path(__file__).resolve().parents[1]


def test_bench_quick_reports_ratios_against_baselines() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert {r["name"] for r in results} == {
        "enrich",
        "model-load",
        "ingest",
        "report",
        "cases-list",
        "rules-scaling",
        "rules-200",
        "feeds-cold",
        "feeds-unchanged",
        "memory",
    } | ({"postgres"} if os.environ.get("MONITOR_TEST_POSTGRES_URL") else set()) | (
        {"enrich-ml", "memory-ml"} if embeddings.available() else set()
    )
    for result in results:
        assert set(result) >= {"name", "value", "unit", "baseline", "ratio", "target", "ok"}
        assert result["value"] > 0
        if result["baseline"] is not None:
            assert abs(result["ratio"] - result["value"] / result["baseline"]) < 0.01
        if result["target"] is not None:
            assert isinstance(result["ok"], bool)
