import pytest

from msr_ray.config import ModelSpec
from msr_ray.models.loading import load_model


@pytest.fixture(scope="session")
def tiny_llm():
    return load_model(ModelSpec(name="tiny", max_new_tokens=8), "llm")


@pytest.fixture(scope="session")
def tiny_mllm():
    return load_model(ModelSpec(name="tiny", max_new_tokens=8), "mllm")


@pytest.fixture(scope="session")
def embedded_llm():
    return load_model(ModelSpec(name="embedded"), "llm")
