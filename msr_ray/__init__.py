"""msr-ray: MLLM-MSR on Ray."""

__version__ = "0.2.0"
