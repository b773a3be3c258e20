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


def check_registration(kind: str, name: object, taken: bool, fn: object, replace: bool, signature: str) -> None:
    """The rules of `register_model` and `register_loss`: an identifier, not taken unless `replace`, callable."""
    if not isinstance(name, str) or not name.isidentifier():
        raise AejaxError(f"a {kind} name must be an identifier, got {name!r}")
    if taken and not replace:
        raise AejaxError(f"{kind} {name!r} is already registered; pass replace=True to replace it")
    if not callable(fn):
        raise AejaxError(f"{kind} {name!r} must be callable ({signature})")
