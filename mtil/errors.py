"""The one exception type the CLI turns into a single clear line and a non-zero exit."""

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
