"""The error types the CLI turns into one line on stderr and an exit status."""

import signal


class UsageError(Exception):
    """Bad input or an unusable environment, with a message that says what to do (exit status 2)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, as schedulers (Slurm, Kubernetes, systemd) stop a job: handled exactly like Ctrl-C.

    A KeyboardInterrupt, so that Optuna marks the running trial failed on its way out."""


class Interrupted(Exception):
    """Ctrl-C or SIGTERM: the message says how to resume; the exit status is 128 + the signal's number."""

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.status = 128 + signum
