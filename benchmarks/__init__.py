"""Benchmarks: each ``bench_*.py`` prints ratios measured side by side in one run. ``python -m benchmarks`` runs all."""
