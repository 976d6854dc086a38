"""Benchmarks of distnet against PyTorch; `python -m benchmarks.throughput --help`."""
