"""`python -m msr_ray`: the `msr-ray` command line."""

from msr_ray.cli import main

main()
