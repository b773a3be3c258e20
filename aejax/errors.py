"""The one exception type for errors a user can cause (config, data, checkpoints, output directory).

The CLIs print its message as one line on stderr and exit with status 2; anything else is a bug.
"""


class AejaxError(Exception):
    """A user-facing error whose message is one self-contained line."""
