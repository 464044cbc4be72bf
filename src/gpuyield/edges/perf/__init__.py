"""Edges of the performance model: kernel-table readers, the torch profiler, validation I/O."""
