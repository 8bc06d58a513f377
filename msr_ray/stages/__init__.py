"""One module per pipeline stage; each exposes ``build(context: BuildContext) -> summary``:
it builds the stage's output in the context's run directory and returns its summary. Only
the pipeline imports these modules (tests/test_layering.py)."""
