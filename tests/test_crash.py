"""A short run of the kill -9 harness (the full 50-run version: `make crash`)."""

from __future__ import annotations

from pathlib import Path

from crash_harness import check, run


def test_kill_9_at_random_moments_loses_and_doubles_nothing(tmp_path: Path) -> None:
    result = run(runs=4, seed=7, workdir=tmp_path)
    assert result["kills"] == 4 and result["posts_in_final_feeds"] > 0
    assert check(result) == [], result
