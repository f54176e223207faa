"""The one exception type the CLI turns into a single clear line and a non-zero exit."""


class MtilError(Exception):
    """A user-facing problem: the message says what is wrong and what to do."""
