"""The benchmarks' shared machinery; the entry points are the modules one level up."""
