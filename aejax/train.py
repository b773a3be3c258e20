"""`python -m aejax.train` (and `aejax-train`): the training command line, `aejax.cli.main`."""

from aejax.cli import main

if __name__ == "__main__":
    main()
