"""The one exception type for errors a user can cause (config, data, checkpoints, output directory).

The CLIs print its message as one line on stderr and exit with status 2; anything else is a bug. A message
that names a setting speaks the caller's language: `str(error)` names Python arguments (`resume=True`), and
`error.cli_message`, which the command lines print, names their flags (`--resume`).
"""


class AejaxError(Exception):
    """A user-facing error whose message is one self-contained line (`cli`: its command-line wording)."""

    def __init__(self, message: str, *, cli: str | None = None):
        super().__init__(message)
        self.cli_message = message if cli is None else cli
