"""One module per pipeline stage; each exposes ``run(config, run_dir) -> summary``."""
