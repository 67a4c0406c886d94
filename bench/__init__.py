"""Benchmarks (not tests): scripts that print figures and ratios, run by hand."""
