"""The benchmark harness runs (quick mode) and reports what it claims; speed itself is judged by `make bench`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_quick_reports_ratios_against_baselines() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert {r["name"] for r in results} == {"ingest"}
    for result in results:
        assert result["value"] > 0 and result["baseline"] > 0
        assert (
            result["ratio"] == round(result["value"] / result["baseline"], 3)
            or abs(result["ratio"] - result["value"] / result["baseline"]) < 0.01
        )
