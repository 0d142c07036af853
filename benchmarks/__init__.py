"""Benchmarks of our kernels against their strongest peers (`make bench`)."""
