"""Benchmark engine behind ``impact-bench``: I/O scenarios and the accuracy benchmark.

Each benchmark lives in its own module (e.g. :mod:`impact_loader.bench.accuracy`); the
scenario definitions and recorded results live in ``benchmarks/`` (not installed).
"""
