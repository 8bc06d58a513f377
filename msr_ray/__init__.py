"""msr-ray: MLLM-MSR on Ray."""

__version__ = "0.1.0"
