"""Measuring code: the loader and offline-tool benchmarks and the timing helpers they share (`timing`)."""
