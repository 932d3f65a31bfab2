"""The errors the CLI turns into one line: a user's mistake (exit code 2) and a run that failed (exit 1)."""


class UserError(ValueError):
    """Bad input the user can fix; the message names the field, node or device and the fix."""


class RunFailed(RuntimeError):
    """A run that could not finish for a reason outside the user's input (a worker killed while
    starting, a full disk): the CLI prints its message on one line, exit code 1."""
