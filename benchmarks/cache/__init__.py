"""Disk-cache read throughput against the prefix's own tokens/s (`python -m benchmarks.cache`)."""
