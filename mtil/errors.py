"""The one exception type the CLI turns into a single clear line and a non-zero exit, and the function that does it."""
from __future__ import annotations

import sys
from typing import Callable

_WORKER_PREFIX = "Caught MtilError in DataLoader worker process"


class MtilError(Exception):
    """A user-facing problem: the message says what is wrong and what to do.

    Raised inside a DataLoader worker, torch re-raises it in the main process as
    `MtilError("Caught MtilError in DataLoader worker process N.\\nOriginal Traceback ...")`; the constructor
    recovers the original one-line message from the traceback's last line so the CLI still prints one line.
    """

    def __init__(self, message: str = "", *args):
        if isinstance(message, str) and message.startswith(_WORKER_PREFIX):
            last = message.rstrip().splitlines()[-1]
            message = last.split("MtilError: ", 1)[-1]
        super().__init__(message, *args)


class NonFiniteLoss(MtilError):
    """The training loss became NaN or infinite; `mtil.engine.run` adds what the user can do from the run's checkpoint."""


def exit_status(action: Callable[[], int | None]) -> int:
    """Run a command's `action` and return its exit status: an MtilError becomes one `mtil: error:` line on stderr
    and 2, Ctrl-C a line saying what is kept and 130 (what `mtil` and the study scripts' `main` return)."""
    try:
        return int(action() or 0)
    except MtilError as e:
        print(f"mtil: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mtil: interrupted; files already written are kept (a run continues with --resume)", file=sys.stderr)
        return 130
