"""Benchmarks: one module per family; run_all.py runs them and rewrites BENCHMARKS.md."""
