"""Preemption: SIGINT and SIGTERM recorded instead of killing a run mid-epoch (`stop_requests`), and the error a
run stopped by one ends with (`Interrupted`)."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator

from aejax.errors import AejaxError


class Interrupted(AejaxError):
    """SIGINT or SIGTERM arrived; the epoch in flight finished and was checkpointed."""

    def __init__(self, message: str, *, cli: str, exit_code: int):
        super().__init__(message, cli=cli)
        self.exit_code = exit_code


@contextlib.contextmanager
def stop_requests() -> Iterator[list[int]]:
    """Record SIGINT/SIGTERM (preemption) instead of dying mid-epoch; `run` stops once the epoch on the device
    (the one after the epoch being reported) is finished and checkpointed.

    A second signal stops at once (the checkpoint of the last reported epoch is on disk either way): through the
    handler that was there before, where it is a function (the command line's ends the process in one line;
    Python's raises KeyboardInterrupt), else by raising KeyboardInterrupt.
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum: int, frame) -> None:
        if received:
            if callable(previous.get(signum)):
                previous[signum](signum, frame)
            raise KeyboardInterrupt
        received.append(signum)
        print(f"received {signal.Signals(signum).name}: stopping after the epoch in flight is checkpointed",
              file=sys.stderr)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
