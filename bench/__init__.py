"""Corral benchmarks: `make bench` (or `python -m bench`) prints a table of medians and p95s."""
