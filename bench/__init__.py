"""Benchmarks and device checks (`python -m bench`; see docs/performance.md)."""
