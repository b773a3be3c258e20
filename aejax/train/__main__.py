"""`python -m aejax.train`: the training command line, `aejax.cli.main`."""

from aejax.cli import main

main()
