"""The one error type the CLI turns into a single line on stderr and exit status 2."""


class UsageError(Exception):
    """Bad input or an unusable environment, with a message that says what to do."""


class Interrupted(Exception):
    """Ctrl-C: the message says how to resume; the exit status is 130."""
