"""vllm-profile-exporter: profiles a vLLM server against its hardware ceiling."""

__version__ = "0.2.0"
