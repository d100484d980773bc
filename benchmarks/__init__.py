"""Benchmarks of rstfast's backends against the reference and the original algorithm (see conftest)."""
