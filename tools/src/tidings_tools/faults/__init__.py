"""Fault injection for tests and benchmarks (a TCP proxy that breaks links on purpose)."""
