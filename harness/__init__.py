"""ssl-bench harness: CLI, orchestration, splits, data, tracking and report."""
