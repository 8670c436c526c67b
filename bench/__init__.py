"""Benchmarks: `python -m bench <name> [args]` (make bench runs them all). Each prints figures; none is a test."""
