"""`python -m aejax.train` (and `aejax-train`): the training command line, `aejax.cli.main`.

From the first moment of the process until a run's own handling takes over (`aejax.training.signals`: the epoch
in flight is finished and checkpointed), SIGINT or SIGTERM ends the process at once with one line; nothing is in
flight then that a checkpoint would keep, and every file aejax writes is written whole or not at all.
"""

import os
import signal
import sys


def _stop(signum: int, frame: object) -> None:
    print(f"stopped by {signal.Signals(signum).name} with no epoch in flight; checkpoints already written are kept "
          f"(run the command again with --resume to continue)", file=sys.stderr, flush=True)
    os._exit(128 + signum)


def main() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _stop)
    from aejax.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
