"""Benchmarks of the real stack: `python -m bench [--quick] [--only NAME]` (or `make bench`).

Every figure is a ratio or a percentile measured side by side within one run, because the
machines these run on are shared and noisy. Nothing here asserts on time.
"""
