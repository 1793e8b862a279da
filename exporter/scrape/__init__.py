"""Sources: vLLM /metrics, NVML, recordings. Each turns one poll into a typed sample."""
