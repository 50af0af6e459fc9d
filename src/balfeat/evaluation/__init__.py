"""Metrics for long-tailed classification: top-k, per-class, many/medium/few, balancedness."""
