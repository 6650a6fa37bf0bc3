"""`tritium bench`: datasets, offline throughput and latency benchmarks, and their reports (trtllm-bench's workflow)."""
