"""Running stages: the stage registry, the pipeline, provenance, the run directory, logs,
the Ray cluster and the tables and Ray Data blocks stages share. Imports only the
foundations (``config``, ``data``, ``models``); runs stages by name (tests/test_layering.py)."""
