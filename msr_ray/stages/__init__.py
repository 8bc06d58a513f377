"""One module per pipeline stage; each exposes ``build(config, run) -> summary``: it builds
the stage's output in the run directory and returns its summary. Only the pipeline imports
these modules (tests/test_layering.py)."""
